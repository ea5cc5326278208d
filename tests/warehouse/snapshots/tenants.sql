CREATE TABLE tawag.tenants
(
    `tenant` LowCardinality(String),
    `time_zone` String,
    `trunk` Nullable(String),
    `loaded_at` DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(loaded_at)
ORDER BY tenant
SETTINGS index_granularity = 8192
