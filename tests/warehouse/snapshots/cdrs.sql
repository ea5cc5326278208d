CREATE TABLE tawag.cdrs
(
    `tenant` LowCardinality(String),
    `call_id` String,
    `version` UInt64,
    `direction` LowCardinality(Nullable(String)),
    `caller` Nullable(String),
    `callee` Nullable(String),
    `did` Nullable(String),
    `agent` Nullable(String),
    `started_at` DateTime64(3, 'UTC'),
    `answered_at` Nullable(DateTime64(3, 'UTC')),
    `ended_at` Nullable(DateTime64(3, 'UTC')),
    `ring_ms` Int64,
    `talk_ms` Int64,
    `disposition` LowCardinality(String),
    `sip_code` Nullable(UInt16),
    `reason` Nullable(String),
    `hangup_by` LowCardinality(Nullable(String)),
    `closed` Bool,
    `recording` Nullable(String),
    `mos` Nullable(Float32),
    `packet_loss` Nullable(Float32),
    `jitter_ms` Nullable(Float32),
    `event_count` UInt32,
    `last_event_ts` DateTime64(3, 'UTC'),
    `kafka_topic` LowCardinality(String),
    `kafka_partition` UInt32,
    `kafka_offset` UInt64,
    `loaded_at` DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant, call_id)
SETTINGS non_replicated_deduplication_window = 1000, index_granularity = 8192
