-- Why: one row per call for managers and analysts. streams publishes a new CDR revision
-- with a higher `version` on every meaningful change; ReplacingMergeTree(version) keeps
-- the highest, so readers use FINAL (or argMax by version) to see one row per call.
-- No PARTITION BY on purpose: FINAL only collapses rows inside one partition, and a late
-- event can move a call's started_at (even across a month boundary), which would leave
-- two "final" rows for one call. CDR volume is modest, so one partition is fine.
-- non_replicated_deduplication_window makes a batch retried with the same
-- insert_deduplication_token add nothing.
-- down: DROP TABLE tawag.cdrs (irreversible for the data: replay tawag.cdrs from Kafka).

CREATE TABLE IF NOT EXISTS tawag.cdrs
(
    tenant          LowCardinality(String),
    call_id         String,
    version         UInt64,
    direction       LowCardinality(Nullable(String)),
    caller          Nullable(String),
    callee          Nullable(String),
    did             Nullable(String),
    agent           Nullable(String),
    started_at      DateTime64(3, 'UTC'),
    answered_at     Nullable(DateTime64(3, 'UTC')),
    ended_at        Nullable(DateTime64(3, 'UTC')),
    ring_ms         Int64,
    talk_ms         Int64,
    disposition     LowCardinality(String),
    sip_code        Nullable(UInt16),
    reason          Nullable(String),
    hangup_by       LowCardinality(Nullable(String)),
    closed          Bool,
    recording       Nullable(String),
    mos             Nullable(Float32),
    packet_loss     Nullable(Float32),
    jitter_ms       Nullable(Float32),
    event_count     UInt32,
    last_event_ts   DateTime64(3, 'UTC'),
    kafka_topic     LowCardinality(String),
    kafka_partition UInt32,
    kafka_offset    UInt64,
    loaded_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant, call_id)
SETTINGS non_replicated_deduplication_window = 1000;
