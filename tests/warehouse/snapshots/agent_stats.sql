CREATE TABLE tawag.agent_stats
(
    `tenant` LowCardinality(String),
    `agent` String,
    `interval_kind` LowCardinality(String),
    `interval_start` DateTime64(3, 'UTC'),
    `version` UInt64,
    `logged_in_ms` Int64,
    `available_ms` Int64,
    `ringing_ms` Int64,
    `talk_ms` Int64,
    `wrap_up_ms` Int64,
    `offered` UInt32,
    `answered` UInt32,
    `missed` UInt32,
    `handled` UInt32,
    `handled_talk_ms` Int64,
    `aht_talk_ms` Nullable(Float64),
    `occupancy` Nullable(Float64),
    `complete_until` DateTime64(3, 'UTC'),
    `kafka_topic` LowCardinality(String),
    `kafka_partition` UInt32,
    `kafka_offset` UInt64,
    `loaded_at` DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(interval_start)
ORDER BY (tenant, agent, interval_kind, interval_start)
SETTINGS non_replicated_deduplication_window = 1000, index_granularity = 8192
