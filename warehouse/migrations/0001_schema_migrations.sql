-- Why: the warehouse needs a database of its own and a record of which migrations ran,
-- so that `migrate` is idempotent and an edited migration is caught by its checksum.
-- Bookkeeping table: no tenant, so it is the one table whose sort key does not start
-- with `tenant`.
-- down: DROP TABLE tawag.schema_migrations; DROP DATABASE tawag (destroys all data).

CREATE DATABASE IF NOT EXISTS tawag;

CREATE TABLE IF NOT EXISTS tawag.schema_migrations
(
    version    UInt32,
    name       String,
    checksum   String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY version;
