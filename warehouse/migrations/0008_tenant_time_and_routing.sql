-- Why: issue 13 (tenant time zones, one meaning per KPI).
-- * tenants: each tenant's IANA time zone (and trunk), loaded from the provisioning
--   file (the one source of truth) by the warehouse at every start; queries read the
--   zone to bucket days and hours locally (toStartOfHour(x, tz), toTimeZone). Latest
--   load wins (ReplacingMergeTree on loaded_at).
-- * cdrs: where the PBX routed the call (route_target), the group it was routed to or
--   rang through (route_group: Trends' "by group"), and the post-dial delay of trunk
--   calls (pdd_ms, RFC 6076). Old rows get NULL.
-- * callbacks: the night / weekend flags of an item's first missed call, computed by
--   streams in the tenant's zone, and that zone. Old rows get false / 'UTC'.
-- down: DROP TABLE tawag.tenants; ALTER TABLE tawag.cdrs DROP COLUMN route_target,
--   DROP COLUMN route_group, DROP COLUMN pdd_ms; ALTER TABLE tawag.callbacks
--   DROP COLUMN night, DROP COLUMN weekend, DROP COLUMN time_zone.

CREATE TABLE IF NOT EXISTS tawag.tenants
(
    tenant     LowCardinality(String),
    time_zone  String,
    trunk      Nullable(String),
    loaded_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(loaded_at)
ORDER BY tenant;

ALTER TABLE tawag.cdrs
    ADD COLUMN IF NOT EXISTS route_target Nullable(String),
    ADD COLUMN IF NOT EXISTS route_group LowCardinality(Nullable(String)),
    ADD COLUMN IF NOT EXISTS pdd_ms Nullable(Int64);

ALTER TABLE tawag.callbacks
    ADD COLUMN IF NOT EXISTS night Bool DEFAULT false,
    ADD COLUMN IF NOT EXISTS weekend Bool DEFAULT false,
    ADD COLUMN IF NOT EXISTS time_zone LowCardinality(String) DEFAULT 'UTC';
