-- Alerts: status changes waiting to hold before they are announced, and announced changes
-- delivered to coordinators (webhooks, e-mail), once per destination.

-- A status seen for a category that differs from the one last announced, not yet announced:
-- it is once it has held while the plan's announce.hold_participants joined the base.
CREATE TABLE status_pending (
    process_id  text NOT NULL,
    dimension   text NOT NULL,
    category    text NOT NULL,
    status      text NOT NULL,
    since_base  bigint NOT NULL,                        -- the category's base when first seen
    sequence    bigint NOT NULL,                        -- stream sequence it was first seen at
    PRIMARY KEY (process_id, dimension, category)
);

-- Announced changes to deliver (the outbox): the status event as published, ratios and
-- "needed" only, never a participant.
CREATE TABLE alert_outbox (
    event_id    text PRIMARY KEY,
    event       jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Where alerts go: "webhook:<hash of the URL>" or "email:<hash of the recipients>" (never the
-- secret URL itself). A destination gets the alerts made after it was first configured.
CREATE TABLE alert_destinations (
    destination  text PRIMARY KEY,
    since        timestamptz NOT NULL DEFAULT now()
);

-- Each alert's delivery to each destination: attempts, when to try again, when delivered.
CREATE TABLE alert_deliveries (
    event_id      text NOT NULL REFERENCES alert_outbox (event_id) ON DELETE CASCADE,
    destination   text NOT NULL,
    attempts      integer NOT NULL DEFAULT 0,
    next_attempt  timestamptz NOT NULL DEFAULT now(),
    last_error    text,
    delivered_at  timestamptz,
    PRIMARY KEY (event_id, destination)
);
