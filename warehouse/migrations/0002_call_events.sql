-- Why: every call event read from tawag.call-events is kept as it arrived, so that
-- analysts can audit a call and the CDRs can be rebuilt by replay. One row per Kafka
-- message (a repeated delivery with the same event_id is kept: this is the audit log;
-- de-duplicate by event_id when counting). `raw` is the exact message, `kafka_*` say
-- where it came from; `call_id` is '' for agent events (it is a sort-key column, and
-- sort keys cannot be Nullable). `media` is an empty map when the event carried none.
-- non_replicated_deduplication_window makes a batch retried with the same
-- insert_deduplication_token add nothing.
-- down: DROP TABLE tawag.call_events (irreversible for the data: replay from Kafka).

CREATE TABLE IF NOT EXISTS tawag.call_events
(
    tenant          LowCardinality(String),
    ts              DateTime64(3, 'UTC'),
    call_id         String,
    event_id        String,
    type            LowCardinality(String),
    schema          UInt8,
    source          LowCardinality(String),
    leg_id          Nullable(String),
    direction       LowCardinality(Nullable(String)),
    caller          Nullable(String),
    callee          Nullable(String),
    did             Nullable(String),
    agent           Nullable(String),
    sip_code        Nullable(UInt16),
    reason          Nullable(String),
    hangup_by       LowCardinality(Nullable(String)),
    duration_ms     Nullable(Int64),
    media           Map(LowCardinality(String), Float64),
    extra           String CODEC(ZSTD(3)),
    raw             String CODEC(ZSTD(3)),
    kafka_topic     LowCardinality(String),
    kafka_partition UInt32,
    kafka_offset    UInt64,
    loaded_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (tenant, ts, call_id, event_id)
SETTINGS non_replicated_deduplication_window = 1000;
