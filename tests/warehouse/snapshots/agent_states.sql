CREATE TABLE tawag.agent_states
(
    `tenant` LowCardinality(String),
    `agent` String,
    `since` DateTime64(3, 'UTC'),
    `state` LowCardinality(String),
    `until` Nullable(DateTime64(3, 'UTC')),
    `version` UInt64,
    `deleted` Bool,
    `kafka_topic` LowCardinality(String),
    `kafka_partition` UInt32,
    `kafka_offset` UInt64,
    `loaded_at` DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(since)
ORDER BY (tenant, agent, since)
SETTINGS non_replicated_deduplication_window = 1000, index_granularity = 8192
