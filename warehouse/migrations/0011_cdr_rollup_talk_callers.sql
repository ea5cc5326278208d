-- Why: issue 15 item 3, the rest of the KPI rollup (0010). Two dashboard figures are not
-- sums of per-call components over the slot a call started in, so cdr_rollup cannot hold
-- them and their queries still read cdrs FINAL over the whole window:
-- * cdr_rollup_talk: talk per interval counts the talk that happened in it, a call's
--   [answered_at, ended_at) cut at slot bounds (DESIGN §7). Per (tenant, call_day of the
--   call's start, 15-minute UTC slot the talk fell in, direction, DID): the talk ms of
--   that slot -- additive, so a bucket's talk is a sum over its slots. A call's talk may
--   fall in the next day's slots; the row stays under its own call_day (rebuilt with it).
-- * cdr_rollup_callers: the contact KPIs count distinct inbound callers and whether two
--   of a caller's calls are at most N apart. Per (tenant, call_day, slot of the start,
--   DID, caller): the caller's contacts in that slot and the first and last start (ms).
--   The caller is kept as `contact`, its 128-bit SipHash: the key uniqExact itself counts
--   strings by, and a number that groups 2 M callers in half the time a String does.
--   Two calls of one slot are < 15 min apart, so for N >= 15 min a caller repeats iff
--   a piece holds two calls or two pieces, sorted, are at most N apart: exact (shorter
--   N are read from cdrs). Not much smaller than cdrs (most callers call once), but one
--   row per contact without FINAL over every revision. Read without FINAL (3.75 M rows
--   for a month of the benchmark's largest tenant; FINAL tripled the read): each rebuild
--   writes its rows under its own random `build`, recorded in its cdr_rollup_days marker,
--   and readers take the rows of the marker's build only -- a day rebuilt twice (or by two
--   refreshers at once) holds two copies, of which one is read.
-- Both are rebuilt with cdr_rollup by warehouse.rollup.rebuild_day, under the same
-- catalogue and generation, read only for days whose cdr_rollup_days marker is current,
-- replacing (keyed by every dimension) and under the tenant row policies.
-- down: DROP TABLE tawag.cdr_rollup_talk, tawag.cdr_rollup_callers; ALTER TABLE
--   tawag.cdr_rollup_days DROP COLUMN build (derived: nothing lost).

CREATE TABLE IF NOT EXISTS tawag.cdr_rollup_talk
(
    tenant     LowCardinality(String),
    call_day   Date,
    catalogue  LowCardinality(String),
    generation DateTime64(3, 'UTC'),
    slot_ms    Int64,
    direction  LowCardinality(Nullable(String)),
    did        Nullable(String),
    talk_ms    Int64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(call_day)
ORDER BY (tenant, call_day, catalogue, generation, slot_ms, direction, did)
SETTINGS allow_nullable_key = 1;

CREATE TABLE IF NOT EXISTS tawag.cdr_rollup_callers
(
    tenant     LowCardinality(String),
    call_day   Date,
    catalogue  LowCardinality(String),
    generation DateTime64(3, 'UTC'),
    build      UInt64,
    slot_ms    Int64,
    direction  LowCardinality(Nullable(String)),
    did        Nullable(String),
    contact    UInt128,
    calls      UInt32,
    first_ms   Int64,
    last_ms    Int64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(call_day)
ORDER BY (tenant, call_day, catalogue, generation, build, slot_ms, direction, did, contact)
SETTINGS allow_nullable_key = 1;

ALTER TABLE tawag.cdr_rollup_days ADD COLUMN IF NOT EXISTS build UInt64 AFTER generation
