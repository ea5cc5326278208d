CREATE TABLE tawag.callbacks
(
    `tenant` LowCardinality(String),
    `client` String,
    `item_id` String,
    `version` UInt64,
    `status` LowCardinality(String),
    `opened_at` DateTime64(3, 'UTC'),
    `last_missed_at` DateTime64(3, 'UTC'),
    `attempts` UInt32,
    `callback_attempts` UInt32,
    `closed_at` Nullable(DateTime64(3, 'UTC')),
    `closed_by_call_id` Nullable(String),
    `called_back_by` Nullable(String),
    `callback_direction` LowCardinality(Nullable(String)),
    `time_to_callback_ms` Nullable(Int64),
    `deleted` Bool,
    `kafka_topic` LowCardinality(String),
    `kafka_partition` UInt32,
    `kafka_offset` UInt64,
    `loaded_at` DateTime64(3, 'UTC') DEFAULT now64(3),
    `night` Bool DEFAULT false,
    `weekend` Bool DEFAULT false,
    `time_zone` LowCardinality(String) DEFAULT 'UTC'
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant, client, item_id)
SETTINGS non_replicated_deduplication_window = 1000, index_granularity = 8192
