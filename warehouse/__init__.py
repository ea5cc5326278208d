"""The warehouse: ClickHouse schema and migrations, the Kafka loader, named queries.

Public surface: :mod:`warehouse.client` (``connect``, ``WarehouseClient``),
:mod:`warehouse.queries` (named queries), :mod:`warehouse.service` (``run``, the owning
process). See DESIGN.md §6 for why one process owns the embedded store.
"""
