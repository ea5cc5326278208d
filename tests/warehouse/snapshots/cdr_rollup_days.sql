CREATE TABLE tawag.cdr_rollup_days
(
    `tenant` LowCardinality(String),
    `call_day` Date,
    `catalogue` LowCardinality(String),
    `generation` DateTime64(3, 'UTC'),
    `build` UInt64,
    `calls` UInt64,
    `built_at` DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(generation)
ORDER BY (tenant, call_day, catalogue)
SETTINGS index_granularity = 8192
