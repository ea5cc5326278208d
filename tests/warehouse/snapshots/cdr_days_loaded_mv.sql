CREATE MATERIALIZED VIEW tawag.cdr_days_loaded_mv TO tawag.cdr_days_loaded
(
    `tenant` LowCardinality(String),
    `call_day` Date,
    `loaded_to` DateTime64(3, 'UTC')
)
AS SELECT
    tenant,
    call_day,
    max(loaded_at) AS loaded_to
FROM tawag.cdrs
GROUP BY
    tenant,
    call_day
