-- Participation over time, and the last status announced per community.

ALTER TABLE participants
    ADD COLUMN days jsonb NOT NULL DEFAULT '{}',          -- "2018-03-05/interview_phone" -> engagements
    ADD COLUMN first_channel text;

CREATE TABLE daily_counts (
    process_id    text NOT NULL,
    day           date NOT NULL,                        -- local day (ENGAGE_TIMEZONE)
    channel       text NOT NULL,
    engagements   bigint NOT NULL DEFAULT 0,
    participants  bigint NOT NULL DEFAULT 0,            -- first reached that day, through that channel
    PRIMARY KEY (process_id, day, channel)
);

-- The status last published for each category with a target (status-change events).
CREATE TABLE category_status (
    process_id  text NOT NULL,
    dimension   text NOT NULL,
    category    text NOT NULL,
    status      text NOT NULL,
    sequence    bigint NOT NULL,                        -- stream sequence it was judged at
    changed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (process_id, dimension, category)
);
