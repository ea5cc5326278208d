-- Why: a CDR keeps the call's participants - every target rung (legs: who, from when to
-- when, how it ended), the forwards and transfers on the way - plus hold time, whether
-- and what was recorded, and the RTP counters of the media. Arrays of named tuples, so
-- analysts get one row per leg with ARRAY JOIN:
--   SELECT call_id, leg.target, leg.outcome,
--          dateDiff('millisecond', leg.rang_from, leg.rang_until) AS rang_ms
--   FROM tawag.cdrs FINAL ARRAY JOIN legs AS leg
-- and whole-call questions with array functions (arrayExists(l -> l.answered, legs)).
-- Old rows get empty arrays and defaults; hold_ms stays 0 until hold events exist.
-- down: ALTER TABLE tawag.cdrs DROP COLUMN for each column below.

ALTER TABLE tawag.cdrs
    ADD COLUMN IF NOT EXISTS legs Array(Tuple(
        leg_id String,
        target Nullable(String),
        rang_from DateTime64(3, 'UTC'),
        rang_until Nullable(DateTime64(3, 'UTC')),
        answered Bool,
        outcome LowCardinality(String))),
    ADD COLUMN IF NOT EXISTS forwards Array(Tuple(
        at DateTime64(3, 'UTC'),
        forwarded_from Nullable(String),
        forwarded_to String,
        reason LowCardinality(Nullable(String)),
        hop Nullable(UInt16))),
    ADD COLUMN IF NOT EXISTS transfers Array(Tuple(
        at DateTime64(3, 'UTC'),
        transferred_from Nullable(String),
        transferred_to Nullable(String),
        kind LowCardinality(Nullable(String)))),
    ADD COLUMN IF NOT EXISTS hold_ms Int64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS recorded Bool DEFAULT false,
    ADD COLUMN IF NOT EXISTS recording_bytes Nullable(UInt64),
    ADD COLUMN IF NOT EXISTS recording_duration_ms Nullable(Int64),
    ADD COLUMN IF NOT EXISTS rtp_packets Nullable(UInt64),
    ADD COLUMN IF NOT EXISTS rtp_bytes Nullable(UInt64),
    ADD COLUMN IF NOT EXISTS rtp_errors Nullable(UInt64);
