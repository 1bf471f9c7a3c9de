-- Dashboard sessions that were signed out: a copy of the cookie is refused until it would
-- have expired anyway. Only a random session id is kept, never a token or a person.

CREATE TABLE dashboard_signouts (
    session_id  text PRIMARY KEY,
    until       timestamptz NOT NULL
);
