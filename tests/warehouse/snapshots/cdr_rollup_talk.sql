CREATE TABLE tawag.cdr_rollup_talk
(
    `tenant` LowCardinality(String),
    `call_day` Date,
    `catalogue` LowCardinality(String),
    `generation` DateTime64(3, 'UTC'),
    `slot_ms` Int64,
    `direction` LowCardinality(Nullable(String)),
    `did` Nullable(String),
    `talk_ms` Int64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(call_day)
ORDER BY (tenant, call_day, catalogue, generation, slot_ms, direction, did)
SETTINGS allow_nullable_key = 1, index_granularity = 8192
