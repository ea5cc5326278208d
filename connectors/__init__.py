"""CRM connectors: amoCRM/Kommo v4, Bitrix24 REST telephony and 1C OData (DESIGN.md §8).

- ``base``: the :class:`~connectors.base.CrmClient` protocol, the ConnectorError tree and
  the pre-request rate limiters. Configuration is :class:`core.settings.Settings` itself
  (its ``crm_*`` and ``recordings_*`` fields), never a copy.
- ``amocrm/``, ``bitrix24/``, ``onec/``: ``client.py`` (injected httpx client), ``auth.py``
  (an ``httpx.Auth``), ``mapping.py`` (pure CDR -> vendor payloads); ``mapping``: what
  every CRM shares (who the client is, a missed call, the callback note).
- ``service``: :func:`connectors.service.run`, the ``tawag connectors`` process, which
  ``wiring`` builds from Settings (clients, outbox, worker, Kafka, HTTP) and ``consume``
  feeds (the Kafka loop);
- ``sync``: the worker (threads, queues, retries); ``screen_pop``: which cards to show
  (pure); ``delivery``: the delivery steps, one per outbox entry kind; ``outbox``: the
  durable per-call delivery journal; ``targets``: CRMs and their user maps;
  ``contacts``: the tawag.crm-contacts records; ``click_to_call`` and ``web``.
- ``recording_links``: signed, expiring recording URLs; ``redact``: secrets out of logs.
"""
