-- The dashboard's feed of recent activity: what happened, where, when. Never who: no
-- participant reference, no profile, no count. Only the latest rows of each process are kept.

CREATE TABLE activity (
    process_id   text NOT NULL,
    sequence     bigint NOT NULL,                     -- stream sequence of the event
    kind         text NOT NULL,                       -- e.g. interview_completed
    channel      text,                                -- e.g. interview_phone
    region       text,                                -- where it took place, if the event says
    topic        text,                                -- advisory feedback: its topic category
    occurred_at  timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL,
    PRIMARY KEY (process_id, sequence)
);

-- Where each interview takes place (from its scheduling), so "interview completed" can say where.
CREATE TABLE interview_regions (
    process_id    text NOT NULL,
    interview_id  text NOT NULL,
    region        text NOT NULL,
    PRIMARY KEY (process_id, interview_id)
);
