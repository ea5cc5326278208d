"""A small SIP user agent over UDP for edge tests where sipp cannot play a party.

sipp runs one dialog per scenario call; a transferor (attended transfer) holds two
dialogs at once and a transfer target must end one dialog when another one replaces
it (RFC 3891). This UA does just enough RFC 3261 for that through the edge on
loopback: INVITE with digest auth (407), 180/200/ACK, in-dialog requests along the
recorded route (re-INVITE, REFER, NOTIFY, BYE), and answering them. No
retransmissions (loopback does not lose datagrams); a repeated request is ignored.
BYE and NOTIFY are answered 200 at once, as a phone does.
"""

from __future__ import annotations

import hashlib
import queue
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

WAIT_S = 10.0
RECV_BUFFER = 65536
AUTO_OK = ("BYE", "NOTIFY")
"""Requests a phone accepts at once, whatever the test does meanwhile (still queued,
so a test can wait for them and look at them)."""
_AUTH_PARAM = re.compile(r'(\w+)="?([^",]*)"?')


@dataclass
class SipMessage:
    """One parsed SIP message: start line, headers (in order, repeats kept), body."""

    first_line: str
    headers: list[tuple[str, str]]
    body: str = ""

    @classmethod
    def parse(cls, data: bytes) -> SipMessage:
        head, _, body = data.decode().partition("\r\n\r\n")
        lines = head.split("\r\n")
        pairs = (line.partition(":") for line in lines[1:])
        headers = [(n.strip(), v.strip()) for n, _, v in pairs]
        return cls(lines[0], headers, body)

    def get(self, name: str) -> str | None:
        return next((v for n, v in self.headers if n.lower() == name.lower()), None)

    def all(self, name: str) -> list[str]:
        """Every value of a header, comma-separated lists split (Via, Record-Route)."""
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        return [part.strip() for v in values for part in re.split(r",(?=\s*<|\s*SIP/)", v)]

    @property
    def is_request(self) -> bool:
        return not self.first_line.startswith("SIP/2.0")

    @property
    def method(self) -> str:
        return self.first_line.split()[0] if self.is_request else self.cseq[1]

    @property
    def status(self) -> int:
        return int(self.first_line.split()[1])

    @property
    def cseq(self) -> tuple[int, str]:
        number, method = (self.get("CSeq") or "0 NONE").split()
        return int(number), method

    @property
    def call_id(self) -> str:
        return self.get("Call-ID") or ""

    def encode(self) -> bytes:
        lines = [self.first_line, *(f"{n}: {v}" for n, v in self.headers
                                    if n.lower() != "content-length")]
        lines.append(f"Content-Length: {len(self.body.encode())}")
        return ("\r\n".join(lines) + "\r\n\r\n" + self.body).encode()


def tag_of(header: str) -> str | None:
    match = re.search(r";tag=([^;>\s]+)", header)
    return match.group(1) if match else None


def uri_of(header: str) -> str:
    match = re.search(r"<([^>]+)>", header)
    return match.group(1) if match else header.split(";")[0].strip()


@dataclass
class Dialog:
    """One SIP dialog as this UA sees it (RFC 3261 12)."""

    ua: SipUa
    call_id: str
    local: str
    """Our From/To header value, with our tag."""
    remote: str
    """The peer's From/To header value, with its tag once known."""
    target: str
    """The peer's Contact URI: the Request-URI of our in-dialog requests."""
    route: list[str]
    cseq: int = 1
    remote_sdp: str = ""

    @property
    def local_tag(self) -> str:
        return tag_of(self.local) or ""

    @property
    def remote_tag(self) -> str:
        return tag_of(self.remote) or ""

    def request(self, method: str, headers: list[tuple[str, str]] | None = None,
                body: str = "", content_type: str = "application/sdp") -> SipMessage:
        """Send an in-dialog request and return its final response (ACKs a 2xx INVITE)."""
        self.cseq += 1
        message = self._message(method, self.cseq, headers or [], body, content_type)
        final = self.ua.transact(message)
        if method == "INVITE" and final.status < 300:
            self.remote_sdp = final.body
            self.ua.send(self._message("ACK", self.cseq, [], "", content_type))
        return final

    def _message(self, method: str, cseq: int, headers: list[tuple[str, str]], body: str,
                 content_type: str) -> SipMessage:
        out = [("Via", self.ua.via()), ("Max-Forwards", "70"),
               *(("Route", r) for r in self.route), ("From", self.local), ("To", self.remote),
               ("Call-ID", self.call_id), ("CSeq", f"{cseq} {method}"),
               ("Contact", self.ua.contact), *headers]
        if body:
            out.append(("Content-Type", content_type))
        return SipMessage(f"{method} {self.target} SIP/2.0", out, body)


@dataclass
class SipUa:
    """An extension's phone on ``127.0.0.1:port``, talking to the edge at ``edge``."""

    user: str
    password: str
    port: int
    edge: tuple[str, int]
    domain: str
    ip: str = "127.0.0.1"
    _sock: socket.socket = field(init=False, repr=False)
    _requests: queue.Queue[SipMessage] = field(init=False, repr=False)
    _responses: queue.Queue[SipMessage] = field(init=False, repr=False)
    _seen: set[str] = field(init=False, repr=False)
    _closed: bool = field(init=False, default=False, repr=False)

    def __post_init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((self.ip, self.port))
        self._sock.settimeout(0.2)
        self._requests, self._responses, self._seen = queue.Queue(), queue.Queue(), set()
        self.received: list[SipMessage] = []
        self.sent: list[SipMessage] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def contact(self) -> str:
        return f"<sip:{self.user}@{self.ip}:{self.port}>"

    @property
    def aor(self) -> str:
        return f"<sip:{self.user}@{self.domain}>"

    def via(self) -> str:
        return f"SIP/2.0/UDP {self.ip}:{self.port};rport;branch=z9hG4bK{secrets.token_hex(8)}"

    def close(self) -> None:
        self._closed = True
        self._reader.join()
        self._sock.close()

    def send(self, message: SipMessage) -> None:
        self.sent.append(message)
        self._sock.sendto(message.encode(), self.edge)

    # --- as a caller ------------------------------------------------------------------

    def invite(self, callee: str, sdp: str, headers: list[tuple[str, str]] | None = None,
               uri: str | None = None) -> tuple[SipMessage, Dialog | None]:
        """Call ``callee`` (answering the edge's 407 once); the final response and, on
        2xx, the dialog (ACK sent)."""
        uri = uri or f"sip:{callee}@{self.domain}"
        call_id = f"ua-{secrets.token_hex(6)}@{self.ip}"
        local = f"{self.aor};tag={secrets.token_hex(4)}"
        extra = list(headers or [])
        for cseq in (1, 2):
            out = [("Via", self.via()), ("Max-Forwards", "70"), ("From", local),
                   ("To", f"<sip:{callee}@{self.domain}>"), ("Call-ID", call_id),
                   ("CSeq", f"{cseq} INVITE"), ("Contact", self.contact), *extra,
                   ("Content-Type", "application/sdp")]
            final = self.transact(SipMessage(f"INVITE {uri} SIP/2.0", out, sdp))
            if final.status >= 300:
                # hop-by-hop ACK for a negative reply: same branch as the INVITE
                ack = [h for h in out if h[0] in ("Via", "From", "Call-ID", "Max-Forwards")]
                ack += [("To", final.get("To") or ""), ("CSeq", f"{cseq} ACK")]
                self.send(SipMessage(f"ACK {uri} SIP/2.0", ack))
            if final.status != 407:
                break
            extra = [*list(headers or []),
                     ("Proxy-Authorization", self._digest(final, "INVITE", uri))]
        if final.status >= 300:
            return final, None
        dialog = Dialog(self, call_id, local, final.get("To") or "",
                        uri_of(final.get("Contact") or ""),
                        list(reversed(final.all("Record-Route"))), cseq, final.body)
        self.send(dialog._message("ACK", cseq, [], "", ""))
        return final, dialog

    def _digest(self, challenge: SipMessage, method: str, uri: str) -> str:
        params = dict(_AUTH_PARAM.findall(challenge.get("Proxy-Authenticate") or ""))
        realm, nonce = params["realm"], params["nonce"]
        cnonce, nc = secrets.token_hex(4), "00000001"
        ha1 = _md5(f"{self.user}:{realm}:{self.password}")
        response = _md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{_md5(f'{method}:{uri}')}")
        return (f'Digest username="{self.user}", realm="{realm}", nonce="{nonce}", '
                f'uri="{uri}", response="{response}", algorithm=MD5, qop=auth, '
                f'nc={nc}, cnonce="{cnonce}"')

    def transact(self, request: SipMessage, timeout: float = WAIT_S) -> SipMessage:
        """Send a request and wait for its final response (provisional ones are kept)."""
        self.send(request)
        branch = _branch(request.get("Via") or "")
        deadline = time.monotonic() + timeout
        while True:
            response = self._responses.get(timeout=max(0.0, deadline - time.monotonic()))
            if _branch(response.all("Via")[0]) == branch and response.status >= 200:
                return response

    # --- as a callee ------------------------------------------------------------------

    def next_request(self, timeout: float = WAIT_S) -> SipMessage | None:
        """The next request received, whatever it is; None after ``timeout`` seconds."""
        try:
            return self._requests.get(timeout=timeout)
        except queue.Empty:
            return None

    def wait_request(self, method: str, timeout: float = WAIT_S) -> SipMessage:
        """The next request received (it must be ``method``: a test script is linear)."""
        request = self._requests.get(timeout=timeout)
        assert request.method == method, f"{self.user} expected {method}, got {request.first_line}"
        return request

    def reply(self, request: SipMessage, status: int, reason: str, body: str = "",
              to_tag: str | None = None, headers: list[tuple[str, str]] | None = None) -> None:
        to = request.get("To") or ""
        if to_tag and not tag_of(to):
            to = f"{to};tag={to_tag}"
        out = [*(("Via", v) for v in request.all("Via")),
               *(("Record-Route", r) for r in request.all("Record-Route")),
               ("From", request.get("From") or ""), ("To", to),
               ("Call-ID", request.call_id), ("CSeq", request.get("CSeq") or ""),
               ("Contact", self.contact), *(headers or [])]
        if body:
            out.append(("Content-Type", "application/sdp"))
        self.send(SipMessage(f"SIP/2.0 {status} {reason}", out, body))

    def answer(self, invite: SipMessage, sdp: str, ring: bool = True,
               after_ring: Callable[[], object] | None = None) -> Dialog:
        """Ring (180) unless told not to, answer 200 with ``sdp`` and wait for the ACK.

        ``after_ring`` runs between the 180 and the 200, like the person who picks up:
        the edge handles a 180 and a 200 sent back to back in two workers at once, so a
        test that checks call.ringing comes before call.answered waits there for it.
        """
        tag = secrets.token_hex(4)
        if ring:
            self.reply(invite, 180, "Ringing", to_tag=tag)
            if after_ring is not None:
                after_ring()
        self.reply(invite, 200, "OK", body=sdp, to_tag=tag)
        self.wait_request("ACK")
        return Dialog(self, invite.call_id, f"{invite.get('To')};tag={tag}",
                      invite.get("From") or "", uri_of(invite.get("Contact") or ""),
                      invite.all("Record-Route"), 0, invite.body)

    # --- the socket -------------------------------------------------------------------

    def _read(self) -> None:
        while not self._closed:
            try:
                data, _ = self._sock.recvfrom(RECV_BUFFER)
            except TimeoutError:
                continue
            message = SipMessage.parse(data)
            self.received.append(message)
            if not message.is_request:
                self._responses.put(message)
                continue
            key = f"{message.all('Via')[0]} {message.get('CSeq')}"
            if key in self._seen:
                continue  # a retransmission of a request we already took
            self._seen.add(key)
            if message.method in AUTO_OK:
                self.reply(message, 200, "OK")
            self._requests.put(message)


def _branch(via: str) -> str:
    match = re.search(r";branch=([^;,\s]+)", via)
    return match.group(1) if match else via


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def sdp(ip: str, port: int, direction: str = "sendrecv", session: int = 1) -> str:
    """A PCMA audio offer/answer on ``ip:port`` (RTCP on port + 1)."""
    return (f"v=0\r\no=tawag-ua {session} {session} IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\n"
            f"t=0 0\r\nm=audio {port} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na={direction}\r\n")


def media_address(body: str) -> tuple[str, int]:
    """The connection address and audio port of an SDP body (what rtpengine wrote)."""
    ip = re.search(r"^c=IN IP4 (\S+)", body, re.MULTILINE)
    port = re.search(r"^m=audio (\d+)", body, re.MULTILINE)
    assert ip and port, f"no audio in SDP: {body!r}"
    return ip.group(1), int(port.group(1))
