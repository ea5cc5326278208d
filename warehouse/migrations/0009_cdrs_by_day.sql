-- Why: issue 15 (a warehouse laid out for time). cdrs was sorted by (tenant, call_id)
-- in one partition, so a window on started_at read the tenant's whole history. Now:
-- * call_day: the UTC day of started_at. The fold sets started_at to the call's own
--   offer (streams/folds/cdr.py), which no revision moves, so every revision of a call
--   has the same call_day; loaders leave it to the DEFAULT.
-- * ORDER BY (tenant, call_day, call_id): tenant first (every read is one tenant's), the
--   day next so one tenant's window is one contiguous key range that the primary index
--   finds, call_id last so the key is still one call. The ReplacingMergeTree key holds
--   call_day, so FINAL still collapses exactly the revisions of one call.
-- * PARTITION BY toYYYYMM(call_day): in the key, so all revisions of a call share a
--   partition (FINAL stays per partition); a window prunes whole months, and a revision
--   of an old call (late event) lands in its old month, next to its earlier revisions.
-- * a bloom filter on call_id: looking up one call by id (API call detail) no longer
--   has call_id second in the key; the filter skips the granules that cannot hold it.
-- Readers put the window's day predicate next to the started_at one
-- (warehouse.queries.window). The existing rows are moved: call_day is added to the old
-- table (no rewrite: old rows compute it on read), a new table is made AS it (the same
-- columns, not a copy of them here) with the new key, INSERT SELECT, then a rename.
-- call_day of old rows is the day of the call's latest revision's started_at (an older
-- fold could move started_at), so a call keeps one key. Re-runnable:
-- a crash before the rename repeats the copy (equal revisions collapse in FINAL), one
-- after it copies the already-moved table once more (the leftover is dropped first).
-- The loader must not write during it: the warehouse migrates before the loader starts.
-- down: the same moves back to ORDER BY (tenant, call_id) without call_day.

DROP TABLE IF EXISTS tawag.cdrs_before_0009 SYNC;

ALTER TABLE tawag.cdrs
    ADD COLUMN IF NOT EXISTS call_day Date DEFAULT toDate(started_at) AFTER started_at;

CREATE TABLE IF NOT EXISTS tawag.cdrs_by_day AS tawag.cdrs
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(call_day)
ORDER BY (tenant, call_day, call_id)
SETTINGS non_replicated_deduplication_window = 1000;

ALTER TABLE tawag.cdrs_by_day
    ADD INDEX IF NOT EXISTS call_id_bloom call_id TYPE bloom_filter(0.01) GRANULARITY 1;

INSERT INTO tawag.cdrs_by_day
SELECT * REPLACE (toDate(argMax(started_at, version) OVER (PARTITION BY tenant, call_id))
                  AS call_day)
FROM tawag.cdrs;

RENAME TABLE tawag.cdrs TO tawag.cdrs_before_0009, tawag.cdrs_by_day TO tawag.cdrs;

DROP TABLE IF EXISTS tawag.cdrs_before_0009 SYNC
