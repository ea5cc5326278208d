-- Why: issue 15 item 3 (dashboard KPIs in < 200 ms whatever the history). The KPIs read
-- cdrs FINAL, and a month of one tenant is millions of revisions to merge on every page.
-- Pre-aggregation must not count a revision twice, and a late event revises old days, so
-- a materialized view summing cdrs inserts (every revision a row) is wrong. Instead:
-- * cdr_days_loaded: per (tenant, call_day) the newest loaded_at written into cdrs, kept
--   by a materialized view on every insert into cdrs (loader, replay, bench alike, so no
--   writer can forget to mark a day). max is idempotent: a redelivered batch, or the
--   backfill below running twice, changes nothing it should not.
-- * cdr_rollup: the KPI catalogue's additive parts (countIf/sumIf of warehouse.queries.kpi,
--   keyed by their SQL's hash in `components`) per 15-minute UTC slot, direction and DID,
--   recomputed for a whole (tenant, call_day) from cdrs FINAL by warehouse.rollup.refresh.
--   `generation` is the day's loaded_to read before that FINAL read: every revision
--   loaded up to it is in the rows. `catalogue` is a hash of the component SQL and the
--   build parameters: rows built under other formulas are never read. Replacing, keyed
--   by every dimension and read with FINAL (a few thousand rows a day): two refreshers
--   building the same generation write the same rows, counted once.
-- * cdr_rollup_days: one marker per rebuilt day, written after its rows. A reader uses a
--   day's rollup only if its newest generation >= the day's loaded_to (no revision loaded
--   since); every other day is read from cdrs FINAL (warehouse.queries.kpi).
-- Tenant isolation: each table has a tenant column and gets the same row policies as the
-- analyst tables (warehouse.server_access.READ_TABLES). The backfill marks every existing
-- day loaded; the refresher builds them.
-- down: DROP TABLE tawag.cdr_days_loaded_mv, tawag.cdr_days_loaded, tawag.cdr_rollup,
--   tawag.cdr_rollup_days (the rollups are derived: nothing is lost).

CREATE TABLE IF NOT EXISTS tawag.cdr_days_loaded
(
    tenant    LowCardinality(String),
    call_day  Date,
    loaded_to SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY (tenant, call_day);

CREATE MATERIALIZED VIEW IF NOT EXISTS tawag.cdr_days_loaded_mv TO tawag.cdr_days_loaded AS
SELECT tenant, call_day, max(loaded_at) AS loaded_to
FROM tawag.cdrs
GROUP BY tenant, call_day;

INSERT INTO tawag.cdr_days_loaded
SELECT tenant, call_day, max(loaded_at) AS loaded_to
FROM tawag.cdrs
GROUP BY tenant, call_day;

CREATE TABLE IF NOT EXISTS tawag.cdr_rollup
(
    tenant     LowCardinality(String),
    call_day   Date,
    catalogue  LowCardinality(String),
    generation DateTime64(3, 'UTC'),
    slot_ms    Int64,
    direction  LowCardinality(Nullable(String)),
    did        Nullable(String),
    components Map(LowCardinality(String), Int64)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(call_day)
ORDER BY (tenant, call_day, catalogue, generation, slot_ms, direction, did)
SETTINGS allow_nullable_key = 1;

CREATE TABLE IF NOT EXISTS tawag.cdr_rollup_days
(
    tenant     LowCardinality(String),
    call_day   Date,
    catalogue  LowCardinality(String),
    generation DateTime64(3, 'UTC'),
    calls      UInt64,
    built_at   DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(generation)
ORDER BY (tenant, call_day, catalogue)
