"""The bridge against a real TCP peer that speaks evapi's netstrings.

Tried: a greeting, valid events split across reads, a payload that is not JSON, an
unknown event, a stream that loses its framing, and the peer closing the connection
(as Kamailio does on restart). Asserted: every valid event reaches the sink once, every
bad input reaches the dead-letter sink with its reason and raw bytes, and the bridge
reconnects by itself.
"""

import json
import queue
import socket
import threading
import time

from ingest.bridge import Bridge
from ingest.decode import DecodeContext

CTX = DecodeContext(source="kamailio@test", tenant_for_domain=lambda d: "acme")


class ListSink:
    def __init__(self) -> None:
        self.events, self.dead, self.flushes = [], [], 0

    def event(self, ev):
        self.events.append(ev)

    def dead_letter(self, record):
        self.dead.append(json.loads(record))

    def flush(self):
        self.flushes += 1


def ns(payload) -> bytes:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return b"%d:%s," % (len(raw), raw)


def call(event, call_id, ts, **kw):
    return ns({"event": event, "ts": ts, "call_id": call_id, "from": "101", "to": "102", **kw})


GREETING = ns({"event": "evapi.connected", "ts": 1.0, "client": "x"})


def wait_until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_bridge_survives_bad_input_and_reconnects():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    scripts = queue.Queue()
    first = GREETING + call("call.start", "c1", 10.0) + call("call.ringing", "c1", 10.5, code=180)
    scripts.put([first[:17], first[17:], ns(b"{broken"), ns({"event": "call.teleport", "ts": 1})])
    scripts.put([GREETING, call("call.answered", "c1", 11.0, code=200), b"zz:not-a-netstring"])
    scripts.put([GREETING, call("call.end", "c1", 15.0, answered_ts=11.0, duration=4)])

    def serve():
        while not scripts.empty():
            conn, _ = server.accept()
            with conn:
                for chunk in scripts.get():
                    conn.sendall(chunk)
                    time.sleep(0.02)  # let the bridge see separate reads
        server.close()

    threading.Thread(target=serve, daemon=True).start()
    sink = ListSink()
    bridge = Bridge(("127.0.0.1", port), CTX, sink)
    stop = threading.Event()
    runner = threading.Thread(target=bridge.run, args=(stop,), daemon=True)
    runner.start()
    wait_until(lambda: len(sink.events) == 4)
    stop.set()
    runner.join(3)

    assert [e.type.value for e in sink.events] == [
        "call.offered", "call.ringing", "call.answered", "call.ended"]
    assert len({e.event_id for e in sink.events}) == 4
    assert sink.events[-1].duration_ms == 4000
    errors = [d["error"] for d in sink.dead]
    assert len(errors) == 3
    assert "not JSON" in errors[0] and "unknown evapi event" in errors[1]
    assert "bad netstring length" in errors[2] and "zz:not-a-netstring" in sink.dead[2]["value"]
    assert bridge.stats.connects == 3
    assert bridge.stats.events == 4 and bridge.stats.dead_letters == 3


def test_bridge_keeps_retrying_until_the_edge_appears():
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens yet: the edge is "down"
    sink = ListSink()
    bridge = Bridge(("127.0.0.1", port), CTX, sink)
    stop = threading.Event()
    threading.Thread(target=bridge.run, args=(stop,), daemon=True).start()
    server = socket.create_server(("127.0.0.1", port))
    conn, _ = server.accept()
    conn.sendall(GREETING + call("call.start", "c9", 20.0))
    wait_until(lambda: len(sink.events) == 1)
    assert bridge.stats.ready.is_set()
    stop.set()
    conn.close()
    server.close()
