-- engage: PostgreSQL roles and schemas, least privilege. Run once by the postgres
-- image's entrypoint (psql -v ON_ERROR_STOP=1, as the superuser) in the database
-- POSTGRES_DB=engage, when the data directory is first made.
--
-- intake keeps scheduling contact details in its own deletable table; analytics keeps
-- read models, its checkpoint and the event archive. Neither can use the other's schema,
-- so a leak through analytics cannot reach a phone number. The survey service has no role:
-- it has no database.
--
-- What each role may do, and no more:
--   engage_intake     connect to this database; make, own and use tables in schema intake.
--   engage_analytics  connect to this database; make, own and use tables in schemas analytics,
--                     analytics_rebuild and analytics_retired (`engage rebuild` fills the
--                     second and swaps its tables in with ALTER TABLE ... SET SCHEMA, moving
--                     the old ones to the third, then empties both; it never makes, drops or
--                     renames a schema).
-- Neither role has CREATE or TEMPORARY on the database, so neither can make a schema or a
-- temporary table; the services find their schemas here and never try (they look in
-- pg_namespace first, since CREATE SCHEMA IF NOT EXISTS asks for CREATE on the database
-- even when the schema exists). The schemas belong to the superuser that runs this file,
-- not to the services: owning one would also let a service drop or rename it and grant it to
-- the other role, and nothing needs that.
--
-- Run it once. It is one transaction: run again, it stops at the first CREATE ROLE ("role
-- ... already exists"), exits non-zero and changes nothing; any failure leaves nothing behind.

\set ON_ERROR_STOP on
-- Passwords come from the container's environment, never from this file.
\getenv intake_password INTAKE_DB_PASSWORD
\getenv analytics_password ANALYTICS_DB_PASSWORD
\if :{?intake_password}
\else
  \set intake_password ''
\endif
\if :{?analytics_password}
\else
  \set analytics_password ''
\endif
-- An empty password would make a role nobody can log in as (PostgreSQL drops it): refuse.
SELECT :'intake_password' = '' AS intake_password_missing,
       :'analytics_password' = '' AS analytics_password_missing \gset
\set VERBOSITY terse
\if :intake_password_missing
  DO $$ BEGIN RAISE EXCEPTION 'INTAKE_DB_PASSWORD is not set or empty: nothing was created'; END $$;
\endif
\if :analytics_password_missing
  DO $$ BEGIN RAISE EXCEPTION 'ANALYTICS_DB_PASSWORD is not set or empty: nothing was created'; END $$;
\endif
\set VERBOSITY default

BEGIN;

-- Log in, nothing else: no superuser, no creating databases or roles, no replication.
CREATE ROLE engage_intake LOGIN PASSWORD :'intake_password'
  NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 20;
CREATE ROLE engage_analytics LOGIN PASSWORD :'analytics_password'
  NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 20;

-- Only engage's roles may connect to this database (psql names it in DBNAME), and they may
-- only connect: no CREATE (schemas), no TEMPORARY (temporary tables).
REVOKE ALL ON DATABASE :"DBNAME" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"DBNAME" TO engage_intake, engage_analytics;

-- Nobody writes to public (already the default since PostgreSQL 15; said out loud here).
REVOKE ALL ON SCHEMA public FROM PUBLIC;

-- Each service's schemas: it runs its own migrations there and nowhere else. No USAGE is
-- granted to the other role, so it can neither read nor name a table in them (PostgreSQL's
-- catalogue, readable by every role, still shows the names of tables and columns, never rows).
CREATE SCHEMA intake;
CREATE SCHEMA analytics;
CREATE SCHEMA analytics_rebuild;
CREATE SCHEMA analytics_retired;
REVOKE ALL ON SCHEMA intake, analytics, analytics_rebuild, analytics_retired FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA intake TO engage_intake;
GRANT USAGE, CREATE ON SCHEMA analytics, analytics_rebuild, analytics_retired TO engage_analytics;

-- Unqualified names land in the service's own schema.
ALTER ROLE engage_intake SET search_path = intake;
ALTER ROLE engage_analytics SET search_path = analytics;

COMMIT;
