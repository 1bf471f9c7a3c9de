-- Read models projected from the ENGAGEMENT stream. Everything here can be rebuilt from the log.

CREATE TABLE checkpoint (
    consumer    text PRIMARY KEY,
    stream_seq  bigint NOT NULL DEFAULT 0,          -- last stream sequence projected
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per participant (a person known by reference, an anonymous survey response,
-- or a gathering attendee). profile holds only category codes the participant chose.
CREATE TABLE participants (
    process_id   text NOT NULL,
    participant  text NOT NULL,
    profile      jsonb NOT NULL DEFAULT '{}',
    channels     jsonb NOT NULL DEFAULT '{}',       -- channel -> engagements
    withdrawn    boolean NOT NULL DEFAULT false,
    first_seen   timestamptz NOT NULL,
    last_seen    timestamptz NOT NULL,
    PRIMARY KEY (process_id, participant)
);

-- Participants per dimension and category. Category '__answered__' counts those who
-- gave a category other than 'declined' (the denominator of shares).
CREATE TABLE category_counts (
    process_id    text NOT NULL,
    dimension     text NOT NULL,
    category      text NOT NULL,
    participants  bigint NOT NULL,
    PRIMARY KEY (process_id, dimension, category)
);

CREATE TABLE engagement_counts (
    process_id   text NOT NULL,
    channel      text NOT NULL,
    engagements  bigint NOT NULL,
    PRIMARY KEY (process_id, channel)
);

CREATE TABLE totals (
    process_id    text PRIMARY KEY,
    participants  bigint NOT NULL,
    engagements   bigint NOT NULL,
    first_event   timestamptz,
    last_event    timestamptz
);
