CREATE TABLE tawag.call_events
(
    `tenant` LowCardinality(String),
    `ts` DateTime64(3, 'UTC'),
    `call_id` String,
    `event_id` String,
    `type` LowCardinality(String),
    `schema` UInt8,
    `source` LowCardinality(String),
    `leg_id` Nullable(String),
    `direction` LowCardinality(Nullable(String)),
    `caller` Nullable(String),
    `callee` Nullable(String),
    `did` Nullable(String),
    `agent` Nullable(String),
    `sip_code` Nullable(UInt16),
    `reason` Nullable(String),
    `hangup_by` LowCardinality(Nullable(String)),
    `duration_ms` Nullable(Int64),
    `media` Map(LowCardinality(String), Float64),
    `extra` String CODEC(ZSTD(3)),
    `raw` String CODEC(ZSTD(3)),
    `kafka_topic` LowCardinality(String),
    `kafka_partition` UInt32,
    `kafka_offset` UInt64,
    `loaded_at` DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (tenant, ts, call_id, event_id)
SETTINGS non_replicated_deduplication_window = 1000, index_granularity = 8192
