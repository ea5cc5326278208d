CREATE TABLE tawag.cdr_rollup_callers
(
    `tenant` LowCardinality(String),
    `call_day` Date,
    `catalogue` LowCardinality(String),
    `generation` DateTime64(3, 'UTC'),
    `build` UInt64,
    `slot_ms` Int64,
    `direction` LowCardinality(Nullable(String)),
    `did` Nullable(String),
    `contact` UInt128,
    `calls` UInt32,
    `first_ms` Int64,
    `last_ms` Int64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(call_day)
ORDER BY (tenant, call_day, catalogue, generation, build, slot_ms, direction, did, contact)
SETTINGS allow_nullable_key = 1, index_granularity = 8192
