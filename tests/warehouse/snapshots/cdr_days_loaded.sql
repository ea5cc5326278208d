CREATE TABLE tawag.cdr_days_loaded
(
    `tenant` LowCardinality(String),
    `call_day` Date,
    `loaded_to` SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY (tenant, call_day)
SETTINGS index_granularity = 8192
