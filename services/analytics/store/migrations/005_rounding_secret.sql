-- The secret behind each participant's rounding key (answers.suppression). Made once, kept for
-- good: the same people must round the same way after a restart, a second instance or a
-- rebuild (which swaps the read models, not this table). Losing it only changes the rounding.

CREATE TABLE rounding_secret (
    id      smallint PRIMARY KEY CHECK (id = 1),
    secret  bytea NOT NULL CHECK (length(secret) >= 32)
);
