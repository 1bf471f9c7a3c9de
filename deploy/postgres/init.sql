-- engage: PostgreSQL roles and schemas, least privilege. Run once by the postgres
-- image's entrypoint (psql, as the superuser) in the database POSTGRES_DB=engage.
--
-- intake keeps scheduling contact details in its own deletable table; analytics keeps
-- read models, its checkpoint and the event archive. Neither can see the other's schema,
-- so a leak through analytics cannot reach a phone number. The survey service has no role:
-- it has no database.

\set ON_ERROR_STOP on
-- Passwords come from the container's environment, never from this file.
\getenv intake_password INTAKE_DB_PASSWORD
\getenv analytics_password ANALYTICS_DB_PASSWORD

-- Log in, nothing else: no superuser, no creating databases or roles, no replication.
CREATE ROLE engage_intake LOGIN PASSWORD :'intake_password'
  NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 20;
CREATE ROLE engage_analytics LOGIN PASSWORD :'analytics_password'
  NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 20;

-- Only engage's roles may connect to this database (psql names it in DBNAME).
REVOKE ALL ON DATABASE :"DBNAME" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"DBNAME" TO engage_intake, engage_analytics;

-- Nobody writes to public (already the default since PostgreSQL 15; said out loud here).
REVOKE ALL ON SCHEMA public FROM PUBLIC;

-- Each service owns its schema: it runs its own migrations there and nowhere else.
-- No USAGE is granted to the other role, so it cannot even list the other's tables.
CREATE SCHEMA intake AUTHORIZATION engage_intake;
CREATE SCHEMA analytics AUTHORIZATION engage_analytics;
REVOKE ALL ON SCHEMA intake FROM PUBLIC;
REVOKE ALL ON SCHEMA analytics FROM PUBLIC;

-- Unqualified names land in the service's own schema.
ALTER ROLE engage_intake SET search_path = intake;
ALTER ROLE engage_analytics SET search_path = analytics;
