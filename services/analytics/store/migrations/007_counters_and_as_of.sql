-- Counters for everything an answer needs, so that no step of the live path reads every
-- participant, and what an as-of answer is made of without replaying the log.

-- Those who gave a profile, and the participants who used each channel.
ALTER TABLE totals ADD COLUMN profiled bigint NOT NULL DEFAULT 0;
ALTER TABLE engagement_counts ADD COLUMN participants bigint NOT NULL DEFAULT 0;
UPDATE totals t
   SET profiled = (SELECT count(*) FROM participants p
                    WHERE p.process_id = t.process_id AND NOT p.withdrawn AND p.profile <> '{}');
INSERT INTO engagement_counts AS e (process_id, channel, engagements, participants)
SELECT p.process_id, c.key, 0, count(*)
  FROM participants p, jsonb_each_text(p.channels) AS c(key, value)
 WHERE NOT p.withdrawn AND c.value::bigint > 0
 GROUP BY 1, 2
    ON CONFLICT (process_id, channel) DO UPDATE SET participants = EXCLUDED.participants;

-- The plan's derived groups are counted in category_counts (and dated_counts) by the rules
-- written here; counters made by other rules are counted again before they are used.
CREATE TABLE derived_rules (
    process_id  text PRIMARY KEY,
    rules       text NOT NULL                           -- the rules, as canonical JSON
);

-- Each counted participant's whole contribution (as in category_counts, engagement_counts
-- and totals), kept under the UTC day of their last engagement: the counts as of a moment
-- are these sums for the days before it, plus the few participants seen since that day began.
CREATE TABLE dated_counts (
    process_id  text NOT NULL,
    day         integer NOT NULL,                       -- days since 1970-01-01, UTC
    item        text NOT NULL,                          -- what is counted (store.dated)
    n           bigint NOT NULL,
    PRIMARY KEY (process_id, day, item)
);

-- The engagements of participants engaged more than once, in log order: what they had said
-- and where by a moment in between. Category codes and channels only; a withdrawal deletes them.
CREATE TABLE touches (
    process_id   text NOT NULL,
    participant  text NOT NULL,
    sequence     bigint NOT NULL,                       -- stream sequence (0: before the second one)
    at           timestamptz NOT NULL,
    channel      text NOT NULL,
    profile      jsonb
);
CREATE INDEX touches_of ON touches (process_id, participant, sequence);

-- When each event happened: the span of the events known as of a moment.
CREATE TABLE event_times (
    process_id  text NOT NULL,
    at          timestamptz NOT NULL,
    PRIMARY KEY (process_id, at)
);

CREATE INDEX participants_last_seen ON participants (process_id, last_seen);
-- Those engaged before and after a moment, found without reading everyone seen after it.
CREATE INDEX participants_between ON participants USING gist (tstzrange(first_seen, last_seen, '[)'))
 WHERE first_seen < last_seen AND NOT withdrawn;

-- Read models projected before these tables existed cannot answer as-of questions until
-- `engage rebuild` fills them from the log (a rebuild's fresh tables never hold this row).
CREATE TABLE as_of_needs_rebuild (since timestamptz NOT NULL DEFAULT now());
INSERT INTO as_of_needs_rebuild SELECT now() WHERE EXISTS (SELECT 1 FROM participants);
