"""The public API (issue 16): REST ``/api/v1`` and signed webhooks, one process (``tawag api``).

- ``app``: the FastAPI app (calls, agents, callbacks); ``webhook_routes``: subscriptions
  and delivery logs. Reads only through the warehouse's named queries, scoped by the
  key's tenant;
- ``keys``: per-tenant API keys (hashed, scoped, revocable; ``tawag apikey``);
  ``ratelimit``: token bucket per key; ``problems``: RFC 9457 errors; ``models``: resources;
- ``webhooks``: fan-out into the durable outbox (``connectors.outbox``) and delivery;
  ``consume``: its Kafka loop; ``subscriptions``: the subscriptions file; ``signing``:
  HMAC-SHA256 (native) and Zadarma's signature; ``zadarma``: Zadarma's NOTIFY_* format;
- ``service``: the process (uvicorn + the webhook worker); ``python -m api openapi``
  prints the document checked in as ``api/openapi.json``.
"""
