"""rtpengine's two control protocols, each one call of I/O.

- ng: bencoded dictionaries over UDP. Used by the ingest recorder (is a call's media
  session gone, so its pcap is complete?) and by ``edge.control`` (readiness ping).
- CLI: one text line over TCP, answered with text until rtpengine closes the connection
  -- what Debian's ``rtpengine-ctl`` (package ``rtpengine-utils``) sends; spoken here so
  the stack needs no Perl tool to stop rtpengine cleanly. ::

    reply = ng_command("127.0.0.1", 2223, {"command": "query", "call-id": call_id})
    text = cli_command("127.0.0.1", 2224, "terminate all")
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

__all__ = ["NgError", "bdecode", "bencode", "cli_command", "ng_command"]

NG_BUFFER = 65535


class NgError(RuntimeError):
    """rtpengine did not answer, or answered something that is not an ng reply."""


def ng_command(host: str, port: int, command: Mapping[str, Any], *,
               timeout: float = 2.0) -> dict[str, Any]:
    """Send one ng command (a bencoded dict over UDP) and return the reply dict."""
    cookie = os.urandom(6).hex().encode()
    packet = cookie + b" " + bencode(dict(command))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            # connected, so a closed port fails at once (ICMP) instead of timing out
            sock.connect((host, port))
            sock.send(packet)
            data = sock.recv(NG_BUFFER)
        except OSError as exc:
            raise NgError(f"rtpengine ng {command.get('command')}: {exc}") from exc
    reply_cookie, _, payload = data.partition(b" ")
    if reply_cookie != cookie:
        raise NgError("rtpengine ng: reply for another request")
    try:
        reply = bdecode(payload)
    except ValueError as exc:
        raise NgError(f"rtpengine ng: {exc}") from exc
    if not isinstance(reply, dict):
        raise NgError(f"rtpengine ng: reply is not a dictionary: {reply!r}")
    return reply


def cli_command(host: str, port: int, line: str, *, timeout: float = 5.0) -> str:
    """Send one CLI command (``terminate all``, ``list totals``) and return rtpengine's text."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(NG_BUFFER):
                chunks.append(chunk)
    except OSError as exc:
        raise NgError(f"rtpengine cli {line!r} on {host}:{port}: {exc}") from exc
    return b"".join(chunks).decode(errors="replace")


def bencode(value: Any) -> bytes:
    """Bencode ints, strings/bytes, lists and dicts (the ng protocol's encoding)."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list | tuple):
        return b"l" + b"".join(bencode(item) for item in value) + b"e"
    if isinstance(value, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in value.items())
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in items) + b"e"
    raise TypeError(f"cannot bencode {type(value).__name__}")


def bdecode(data: bytes) -> Any:
    """Decode one bencoded value; byte strings come back as ``str`` (UTF-8)."""
    value, end = _bdecode_at(data, 0)
    if end != len(data):
        raise ValueError("bencode: trailing data")
    return value


def _bdecode_at(data: bytes, pos: int) -> tuple[Any, int]:
    lead = data[pos : pos + 1]
    if lead == b"i":
        end = data.index(b"e", pos)
        return int(data[pos + 1 : end]), end + 1
    if lead in (b"l", b"d"):
        items: list[Any] = []
        pos += 1
        while data[pos : pos + 1] != b"e":
            item, pos = _bdecode_at(data, pos)
            items.append(item)
        if lead == b"l":
            return items, pos + 1
        return dict(zip(items[::2], items[1::2], strict=True)), pos + 1
    if lead.isdigit():
        colon = data.index(b":", pos)
        start = colon + 1
        end = start + int(data[pos:colon])
        if end > len(data):
            raise ValueError("bencode: string runs past the end")
        return data[start:end].decode(errors="replace"), end
    raise ValueError(f"bencode: unexpected byte {lead!r} at {pos}")
