-- Why: the missed-call callback list: clients who called in and were not answered,
-- until an answered call (either direction) reaches them. streams publishes revisions
-- of each item with a growing `version`; ReplacingMergeTree(version) keeps the latest
-- per (tenant, client, item_id) - item_id (the first missed call's id) is in the key so
-- that a client's earlier, closed items stay next to the open one. Retracted items
-- (merged into an earlier one by a late CDR) have deleted = 1. Read with FINAL.
-- No PARTITION BY: a late CDR may move an item's opened_at; one partition keeps FINAL exact.
-- non_replicated_deduplication_window makes a retried batch add nothing.
-- down: DROP TABLE tawag.callbacks (irreversible for the data: replay tawag.cdrs).

CREATE TABLE IF NOT EXISTS tawag.callbacks
(
    tenant              LowCardinality(String),
    client              String,
    item_id             String,
    version             UInt64,
    status              LowCardinality(String),
    opened_at           DateTime64(3, 'UTC'),
    last_missed_at      DateTime64(3, 'UTC'),
    attempts            UInt32,
    callback_attempts   UInt32,
    closed_at           Nullable(DateTime64(3, 'UTC')),
    closed_by_call_id   Nullable(String),
    called_back_by      Nullable(String),
    callback_direction  LowCardinality(Nullable(String)),
    time_to_callback_ms Nullable(Int64),
    deleted             Bool,
    kafka_topic         LowCardinality(String),
    kafka_partition     UInt32,
    kafka_offset        UInt64,
    loaded_at           DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant, client, item_id)
SETTINGS non_replicated_deduplication_window = 1000;
