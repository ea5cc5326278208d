"""The public API (issue 16): REST ``/api/v1`` and signed webhooks, one process (``tawag api``).

- ``app``: the FastAPI app (calls, agents, callbacks; webhook routes from ``webhooks``);
  reads only through the warehouse's named queries, scoped by the key's tenant;
- ``keys``: per-tenant API keys (hashed, scoped, revocable; ``tawag apikey``);
  ``ratelimit``: token bucket per key; ``problems``: RFC 9457 errors; ``models``: resources;
- ``service``: the process (uvicorn + the webhook worker); ``python -m api openapi``
  prints the document checked in as ``api/openapi.json``.
"""
