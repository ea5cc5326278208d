"""CRM connectors: amoCRM/Kommo v4, Bitrix24 REST telephony and 1C OData (DESIGN.md §8).

- ``base``: the :class:`~connectors.base.CrmClient` protocol, the ConnectorError tree and
  the pre-request rate limiters; ``config``: :class:`~connectors.config.ConnectorConfig`.
- ``amocrm/``, ``bitrix24/``, ``onec/``: ``client.py`` (injected httpx client), ``auth.py``
  (an ``httpx.Auth``), ``mapping.py`` (pure CDR -> vendor payloads).
- ``outbox``: the durable per-call delivery journal; ``sync``: the worker and
  :func:`connectors.sync.run`, the Kafka edge for a ``tawag connectors`` command.
- ``recording_links``: signed, expiring recording URLs; ``redact``: secrets out of logs.
"""
