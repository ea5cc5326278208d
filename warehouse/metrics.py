"""The warehouse's Prometheus metrics: the loader's rows, batches and dead letters, and
the read-only HTTP interface's queries, latency and errors (served by
:func:`core.metrics.serve` on ``warehouse_metrics_port``)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = ["ROWS_LOADED", "BATCHES", "LOAD_FAILURES", "DEAD_LETTERS", "SKIPPED",
           "QUERIES", "QUERY_SECONDS", "HTTP_ERRORS"]

ROWS_LOADED = Counter("tawag_warehouse_rows_loaded", "Rows written to the warehouse, by table",
                      ["table"])
BATCHES = Counter("tawag_warehouse_load_batches",
                  "Batches (one topic-partition's records of one poll) written, by table",
                  ["table"])
LOAD_FAILURES = Counter("tawag_warehouse_load_failures",
                        "Loader polls that failed (write, dead-letter publish or commit) and "
                        "were rewound to be retried")
DEAD_LETTERS = Counter("tawag_warehouse_dead_letters",
                       "Kafka records the loader could not decode, sent to the dead-letter "
                       "topic, by source topic", ["topic"])
SKIPPED = Counter("tawag_warehouse_records_skipped",
                  "Records already stored (redelivered after a crash) and not written again")
QUERIES = Counter("tawag_warehouse_queries",
                  "Queries received on the HTTP interface, by outcome (ok, refused, error)",
                  ["outcome"])
QUERY_SECONDS = Histogram("tawag_warehouse_query_duration_seconds",
                          "Time to run a query of the HTTP interface (refused ones excluded)",
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
                                   30, 60))
HTTP_ERRORS = Counter("tawag_warehouse_http_errors",
                      "HTTP interface answers with a 4xx/5xx status, by status code", ["code"])
