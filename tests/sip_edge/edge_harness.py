"""Pieces of the SIP edge tests: test ports, the running stack, an evapi listener.

The stack uses ports 25060-25099 and RTP ports 32000-32999 so that it can run next to a
development stack on the default ports. Processes are started in the foreground and
stopped by PID in the fixture finalizer.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.settings import Settings
from edge import control as edge

SIP_PORT = 25060
HTTP_PORT = 25061
EVAPI_PORT = 25062
NG_PORT = 25063
CLI_PORT = 25064
RTPENGINE_HTTP_PORT = 25065
RTP_PORT_MIN = 32000
RTP_PORT_MAX = 32499
NO_ANSWER_TIMEOUT_S = 2
"""Short on purpose: the no-answer test waits for it."""
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
EVENT_TIMEOUT_S = 10.0
RECV_BUFFER = 65536
SOCKET_POLL_S = 0.5


@dataclass
class EdgeStack:
    settings: Settings
    rtpengine: subprocess.Popen[bytes]
    kamailio: subprocess.Popen[bytes]
    switches: tuple[str, ...] = edge.DEFAULT_SWITCHES

    def restart_kamailio(self) -> None:
        """Stop Kamailio by its PID and start it again (its htables and usrloc are lost)."""
        stop_processes([self.kamailio])
        self.kamailio = start_kamailio(self.settings, self.switches)

    def alive(self) -> bool:
        return self.rtpengine.poll() is None and self.kamailio.poll() is None

    def kamailio_log(self) -> str:
        return (self.settings.log_dir / "kamailio.log").read_text(errors="replace")


class EvapiListener:
    """Reads netstring-framed JSON events from Kamailio's evapi socket in a thread."""

    def __init__(self, host: str, port: int) -> None:
        self._sock = socket.create_connection((host, port), timeout=START_TIMEOUT_S)
        self._sock.settimeout(SOCKET_POLL_S)
        self._events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    @property
    def events(self) -> list[dict[str, Any]]:
        with self._cond:
            return list(self._events)

    def wait_for(
        self, match: Callable[[dict[str, Any]], bool], timeout: float = EVENT_TIMEOUT_S
    ) -> dict[str, Any]:
        """The first event (already received or arriving within ``timeout``) that matches."""
        with self._cond:
            found = self._cond.wait_for(
                lambda: next((e for e in self._events if match(e)), None), timeout
            )
        if found is None:
            raise AssertionError(f"no matching evapi event within {timeout}s: {self.events}")
        return found

    def for_call(self, call_id: str | None) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("call_id") == call_id]

    def close(self) -> None:
        self._closed = True
        self._thread.join()
        self._sock.close()

    def _read(self) -> None:
        buffer = b""
        while not self._closed:
            try:
                chunk = self._sock.recv(RECV_BUFFER)
            except TimeoutError:
                continue
            if not chunk:
                return
            buffer = self._consume(buffer + chunk)

    def _consume(self, buffer: bytes) -> bytes:
        """Take every complete netstring ``<len>:<json>,`` off the front of ``buffer``."""
        while b":" in buffer:
            size, _, rest = buffer.partition(b":")
            length = int(size)
            if len(rest) < length + 1:
                break
            assert rest[length : length + 1] == b",", "netstring without its comma"
            with self._cond:
                self._events.append(json.loads(rest[:length]))
                self._cond.notify_all()
            buffer = rest[length + 1 :]
        return buffer


def start_process(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Start a daemon in the foreground with its output appended to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )


def stop_processes(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every process by its PID first (they exit in parallel), then reap."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_kamailio(
    settings: Settings, switches: tuple[str, ...] | list[str]
) -> subprocess.Popen[bytes]:
    """Kamailio with ``switches``, returned once JSON-RPC answers."""
    command = edge.kamailio_command(settings, switches=switches)
    kamailio = start_process(command, settings.log_dir / "kamailio.log")
    if not edge.wait_until(lambda: edge.kamailio_ready(settings), timeout=START_TIMEOUT_S):
        stop_processes([kamailio])
        raise AssertionError(f"kamailio did not answer JSON-RPC: {settings.log_dir}")
    return kamailio


def connect_evapi(host: str, port: int) -> EvapiListener:
    """Kamailio's evapi process may bind a moment after JSON-RPC answers."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            return EvapiListener(host, port)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(SOCKET_POLL_S / 10)
