"""A minimal Faust app for the broker compatibility test (run as a worker subprocess).

It reads JSON records from one topic, counts them per key in a table (so the worker also
creates and writes a changelog topic, a transactional-free but realistic Faust feature)
and echoes each record, with its running count, to a second topic keyed like the input.
Configured by environment so the test can point it at a throw-away broker:
``ECHO_BROKER``, ``ECHO_IN``, ``ECHO_OUT``, ``ECHO_APP_ID``.
"""

from __future__ import annotations

import os

import faust

BROKER = os.environ.get("ECHO_BROKER", "127.0.0.1:29092")

app = faust.App(
    os.environ.get("ECHO_APP_ID", "tawag-echo-test"),
    broker=f"kafka://{BROKER}",
    store="memory://",
    web_enabled=False,
    web_host="127.0.0.1",  # in case a faust version starts the web server anyway
    web_port=29094,
    topic_partitions=int(os.environ.get("ECHO_PARTITIONS", "4")),
    topic_replication_factor=1,
    consumer_auto_offset_reset="earliest",
)

source = app.topic(
    os.environ.get("ECHO_IN", "echo-in"), key_type=bytes, value_type=bytes, value_serializer="json"
)
sink = app.topic(
    os.environ.get("ECHO_OUT", "echo-out"),
    key_type=bytes,
    value_type=bytes,
    value_serializer="json",
)
counts = app.Table("echo-counts", default=int)


@app.agent(source)
async def echo(stream):  # type: ignore[no-untyped-def]
    """Echo each record with its per-key running count (table keyed by message key)."""
    async for key, value in stream.items():
        name = key.decode() if isinstance(key, bytes) else str(key)
        counts[name] += 1
        await sink.send(key=key, value={"echo": value, "count": counts[name]})
