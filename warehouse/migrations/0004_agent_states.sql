-- Why: managers see what each agent was doing (offline / available / ringing / on_call /
-- wrap_up) and when. streams publishes one row per state segment, keyed (tenant, agent,
-- since), and revises it: first open (until NULL), then closed (until set), or retracted
-- (deleted = 1) when a late event shows the segment never existed. ReplacingMergeTree
-- on `version` (the agent's folded-event count, growing) keeps each segment's latest
-- revision; a plain MergeTree would keep the open and the closed revision side by side.
-- Readers use FINAL and skip deleted rows. PARTITION BY the month of `since` is safe:
-- `since` is in the sort key, so all revisions of one segment share a partition.
-- non_replicated_deduplication_window makes a retried batch add nothing.
-- down: DROP TABLE tawag.agent_states (irreversible for the data: replay call events).

CREATE TABLE IF NOT EXISTS tawag.agent_states
(
    tenant          LowCardinality(String),
    agent           String,
    since           DateTime64(3, 'UTC'),
    state           LowCardinality(String),
    until           Nullable(DateTime64(3, 'UTC')),
    version         UInt64,
    deleted         Bool,
    kafka_topic     LowCardinality(String),
    kafka_partition UInt32,
    kafka_offset    UInt64,
    loaded_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(since)
ORDER BY (tenant, agent, since)
SETTINGS non_replicated_deduplication_window = 1000;
