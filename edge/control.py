"""Command lines and readiness checks of the SIP edge (Kamailio + rtpengine).

The process supervisor starts rtpengine first, waits for :func:`rtpengine_ready`, then
starts Kamailio and waits for :func:`kamailio_ready`: Kamailio's rtpengine module
disables a proxy that misses its first ping (``rtpengine_disable_tout``), so the order
matters. Both run in the foreground (never daemonised) and stop on SIGTERM to their PID::

    settings = core.settings.load()
    prepare_dirs(settings)
    rtp = subprocess.Popen(rtpengine_command(settings), ...)
    wait_until(lambda: rtpengine_ready(settings), timeout=10)
    kam = subprocess.Popen(kamailio_command(settings), ...)
    wait_until(lambda: kamailio_ready(settings), timeout=10)
    kamailio_rpc(settings, "dlg.list")

Every host value (ports, SIP domain, no-answer timeout) reaches the shipped
``sip-edge/kamailio.cfg`` as a pre-processor define (``kamailio -A NAME=VALUE``); the
file itself holds ``#!trydef`` defaults equal to the :class:`Settings` defaults.
"""

from __future__ import annotations

import math
import os
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from jsonrpcclient import Ok, parse, request

from core.settings import REPO_ROOT, Settings
from core.tls import default_context
from edge.hold_music import ensure_hold_music
from edge.rtpengine import NgError, bdecode, bencode, cli_command, ng_command

__all__ = [
    "KAMAILIO_CFG",
    "DEFAULT_SWITCHES",
    "platform_switches",
    "EdgeError",
    "KamailioRpcError",
    "prepare_dirs",
    "kamailio_defines",
    "kamailio_command",
    "rtpengine_command",
    "rtpengine_ng",
    "rtpengine_ready",
    "kamailio_rpc",
    "kamailio_ready",
    "wait_until",
    "Registration",
    "registrations",
    "pbx_value",
    "bridge_call",
    "bridge_controller",
    "steer_connection",
    "steer_token",
    "bridge_contact",
    "bencode",
    "bdecode",
]

KAMAILIO_CFG = REPO_ROOT / "sip-edge" / "kamailio.cfg"
DEFAULT_SWITCHES: tuple[str, ...] = ("WITH_RTPENGINE", "WITH_TAWAG_EVAPI")
"""Feature switches of kamailio.cfg the platform always runs with."""


def platform_switches(settings: Settings) -> tuple[str, ...]:
    """The switches of the real stack: the PBX always, digest auth when ``sip_auth``,
    pike flood protection when ``pike_density`` is above 0."""
    switches = [*DEFAULT_SWITCHES, "WITH_PBX"]
    if settings.sip_auth:
        switches.append("WITH_AUTH")
    if settings.pike_density > 0:
        switches.append("WITH_ANTIFLOOD")
    if settings.steering:
        switches.append("WITH_STEERING")
    return tuple(switches)

KAMAILIO_SHM_MB = 64
KAMAILIO_PKG_MB = 8
RTPENGINE_LOG_LEVEL = 6
RTP_TIMEOUT_S = 60
"""rtpengine drops a call whose media stopped for this long (a BYE was lost)."""
RTP_SILENT_TIMEOUT_S = 3600
"""...or that kept sending only silence/one direction for this long."""
READY_TIMEOUT_S = 1.0
"""Budget of one readiness probe; the supervisor polls it repeatedly."""
MS_PER_S = 1000
NOT_FOUND = 404
"""Code of a Kamailio RPC error for "no such AoR / htable key"."""


class EdgeError(RuntimeError):
    """The edge did not answer as expected (no reply, bad reply)."""


class KamailioRpcError(EdgeError):
    """Kamailio answered a JSON-RPC call with an error object."""

    def __init__(self, method: str, code: int, message: str) -> None:
        super().__init__(f"{method}: {code} {message}")
        self.method = method
        self.code = code


def prepare_dirs(settings: Settings) -> None:
    """Create the run, log and recordings folders the edge writes into, and the built-in
    hold music when no file of the operator's is configured."""
    for path in (settings.run_dir, settings.log_dir, settings.recordings_dir):
        path.mkdir(parents=True, exist_ok=True)
    if not settings.hold_music:
        ensure_hold_music(settings.hold_music_file)


# --- Kamailio -------------------------------------------------------------------------


def kamailio_defines(settings: Settings) -> dict[str, str]:
    """The ``-A NAME=VALUE`` defines that carry Settings into kamailio.cfg."""
    host = settings.sip_host
    return {
        "SIP_LISTEN_UDP": f"udp:{host}:{settings.sip_port}",
        "SIP_LISTEN_TCP": f"tcp:{host}:{settings.sip_port}",
        "HTTP_LISTEN": f"tcp:{host}:{settings.kamailio_http_port}",
        "HTTP_PORT": str(settings.kamailio_http_port),
        "SIP_DOMAIN": _quoted(settings.sip_domain),
        "EVAPI_BIND": _quoted(f"{host}:{settings.evapi_port}"),
        "RTPENGINE_SOCK": _quoted(f"udp:{host}:{settings.rtpengine_ng_port}"),
        "NO_ANSWER_TIMEOUT_MS": str(settings.no_answer_timeout * MS_PER_S),
        "MAX_CALL_DURATION_S": str(settings.max_call_duration_s),
        "PIKE_DENSITY": str(max(settings.pike_density, 1)),
        "EVAPI_BUFFER_SIZE": str(max(settings.evapi_buffer_size, 1)),
        "EVAPI_RESEND": str(max(settings.evapi_resend, 0)),
        "BRIDGE_CONTROLLER": _quoted(bridge_controller(settings)),
        "BRIDGE_CONTACT": _quoted(bridge_contact(settings)),
        "ROUTING_STALE_S": str(settings.routing_stale_s),
        "STEER_CON": _quoted(steer_connection(settings)),
        "HOLD_MUSIC": _quoted(str(settings.hold_music_file)),
    }


def steer_token(settings: Settings) -> str:
    """The edge's password for the API's ``/internal/steer``: made once (mode 0600) by
    whichever of the two starts first, read by both."""
    path = settings.data_dir / "api" / "edge-steer.key"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(24))
    return path.read_text().strip()


def steer_connection(settings: Settings) -> str:
    """http_client's ``steer`` connection: the API on this host, with the edge's token
    and a timeout past the API's own wait (``steer_wait_s``)."""
    host = "127.0.0.1" if settings.api_host in ("0.0.0.0", "") else settings.api_host
    timeout = math.ceil(settings.steer_wait_s) + 1
    return (f"steer=>http://edge:{steer_token(settings)}@{host}:{settings.api_port}"
            f"/internal;timeout={timeout}")


def kamailio_command(
    settings: Settings,
    *,
    switches: Iterable[str] | None = None,
    check_only: bool = False,
) -> list[str]:
    """Kamailio in the foreground (``-DD -E``), logging to stderr, with Settings applied.

    ``switches`` default to :func:`platform_switches` (PBX, auth and flood protection as
    the settings say). ``check_only`` gives the ``kamailio -c`` syntax check of the same
    configuration.
    """
    if switches is None:
        switches = platform_switches(settings)
    cmd = ["kamailio", "-f", str(KAMAILIO_CFG)]
    for name in switches:
        cmd += ["-A", name]
    for name, value in kamailio_defines(settings).items():
        cmd += ["-A", f"{name}={value}"]
    if check_only:
        return [*cmd, "-c"]
    return [
        *cmd,
        "-DD",
        "-E",
        "-Y",
        str(settings.run_dir),
        "-P",
        str(settings.run_dir / "kamailio.pid"),
        "-m",
        str(KAMAILIO_SHM_MB),
        "-M",
        str(KAMAILIO_PKG_MB),
    ]


def kamailio_rpc(settings: Settings, method: str, *params: Any, timeout: float = 5.0) -> Any:
    """Call a Kamailio RPC method over JSON-RPC/HTTP and return its result.

    Raises :class:`KamailioRpcError` on an error answer and :class:`EdgeError` when
    Kamailio cannot be reached.
    """
    body = request(method, params=list(params)) if params else request(method)
    try:
        reply = httpx.post(settings.kamailio_rpc_url, json=body, timeout=timeout,
                           verify=default_context())
        parsed = parse(reply.json())
    except (httpx.HTTPError, ValueError) as exc:
        raise EdgeError(f"{method}: {exc}") from exc
    if isinstance(parsed, Ok):
        return parsed.result
    raise KamailioRpcError(method, parsed.code, parsed.message)


def kamailio_ready(settings: Settings) -> bool:
    """True once Kamailio answers ``core.version`` over JSON-RPC."""
    try:
        version = kamailio_rpc(settings, "core.version", timeout=READY_TIMEOUT_S)
    except EdgeError:
        return False
    return str(version).startswith("kamailio")


# --- click-to-call: dlg.bridge_dlg ---------------------------------------------------

BRIDGE_USER = "click-to-call"
"""User part of the From of the edge's INVITE to the agent (shown on the phone)."""


def bridge_controller(settings: Settings) -> str:
    """From of the bridge's INVITE and Referred-By of its REFER (dialog ``bridge_controller``)."""
    return f"sip:{BRIDGE_USER}@{settings.sip_domain}"


def bridge_contact(settings: Settings) -> str:
    """Contact of the bridge's INVITE: the edge itself, so the agent's in-dialog requests
    (NOTIFY after the REFER, an early BYE) come back here instead of going to the
    dialog module's default ``kamailio.org``."""
    return f"sip:{BRIDGE_USER}@{settings.sip_host}:{settings.sip_port}"


@dataclass(frozen=True)
class Registration:
    """One registered contact of an extension, as usrloc holds it."""

    address: str
    """The Contact URI the phone registered (``sip:101@10.0.0.5:5062``)."""
    received: str | None = None
    """Where the REGISTER really came from when it differs (NAT), else None."""


def registrations(settings: Settings, user: str) -> list[Registration]:
    """The contacts ``user`` has registered now (``ul.lookup location``); [] when none.

    usrloc answers an unknown AoR with an RPC error ("AOR not found in location table"),
    which is the normal "not registered" case here, not a failure of the edge.
    """
    try:
        result = kamailio_rpc(settings, "ul.lookup", "location", user)
    except KamailioRpcError as exc:
        if _missing(exc):
            return []
        raise
    out = []
    for item in (result or {}).get("Contacts") or []:
        contact = item.get("Contact", item) if isinstance(item, dict) else {}
        address = contact.get("Address")
        if address:
            received = contact.get("Received")
            out.append(Registration(str(address), str(received) if received and
                                    received != "[not set]" else None))
    return out


def _missing(exc: KamailioRpcError) -> bool:
    """An RPC error that only says "no such thing": Kamailio 5.6 sends these as code 500
    ("AOR not found in location table", "Key name doesn't exist in htable.")."""
    text = str(exc).lower()
    return exc.code == NOT_FOUND or "not found" in text or "doesn't exist" in text


def pbx_value(settings: Settings, key: str) -> str | None:
    """One key of the provisioning htable ``pbx`` (``ext:<domain>:<user>``), None if unset."""
    try:
        result = kamailio_rpc(settings, "htable.get", "pbx", key)
    except KamailioRpcError as exc:
        if _missing(exc):
            return None
        raise
    value = (result or {}).get("item", {}).get("value")
    return None if value is None else str(value)


def bridge_call(settings: Settings, first: str, refer_to: str, *,
                proxy: str | None = None) -> None:
    """Ring ``first`` (a SIP URI) from the edge; when it answers, REFER it to ``refer_to``.

    Why ``dlg.bridge_dlg`` (Kamailio's dialog module, INVITE-REFER-BYE) and not the uac
    module or a B2BUA: after the REFER the agent's *own phone* places the call to the
    client, so that leg is exactly an outbound call dialled on the phone -- the edge's
    digest auth, ``route[PBX]`` classification, the trunk with the company caller ID,
    recording policy, evapi events, CDR and CRM logging all apply unchanged, and the cfg
    needs nothing but the bridge's From/Contact (BRIDGE_CONTROLLER/BRIDGE_CONTACT).
    ``uac_req_send`` sends one request and cannot hold an INVITE dialog (ACK, REFER,
    BYE); a third-party-call-control B2BUA would need SDP juggling Kamailio is not built
    for. The price: the phone must accept a REFER (blind transfer, which desk phones and
    softphones do), and the agent's ringing leg is not a Tawag call -- it has no events;
    when the agent does not answer, the only sign is that no outbound call follows.

    ``first`` is the agent's registered contact, not its AoR: the edge sends this INVITE
    itself (no ``request_route``), and it could not answer its own digest challenge.
    ``proxy`` (a NAT'ed phone's received address) is where the INVITE is sent instead.
    Returns once Kamailio has sent the INVITE; the RPC does not wait for the answer.
    """
    kamailio_rpc(settings, "dlg.bridge_dlg", first, refer_to, proxy or ".")


# --- rtpengine ------------------------------------------------------------------------


def rtpengine_command(settings: Settings) -> list[str]:
    """rtpengine in the foreground, userspace forwarding only, ignoring /etc configs.

    Recording, when Kamailio asks for it, writes pcap files under ``recordings_dir``
    (the /proc method would need the kernel module).
    """
    host = settings.sip_host
    return [
        "rtpengine",
        "--config-file=none",
        "--foreground",
        "--log-stderr",
        f"--log-level={RTPENGINE_LOG_LEVEL}",
        "--table=-1",
        f"--interface={host}",
        f"--listen-ng={host}:{settings.rtpengine_ng_port}",
        f"--listen-cli={host}:{settings.rtpengine_cli_port}",
        # its own HTTP listener: GET /metrics is rtpengine's Prometheus export
        f"--listen-http={host}:{settings.rtpengine_http_port}",
        f"--port-min={settings.rtp_port_min}",
        f"--port-max={settings.rtp_port_max}",
        f"--timeout={RTP_TIMEOUT_S}",
        f"--silent-timeout={RTP_SILENT_TIMEOUT_S}",
        "--delete-delay=0",
        f"--recording-dir={settings.recordings_dir}",
        "--recording-method=pcap",
        "--recording-format=eth",
        f"--pidfile={settings.run_dir / 'rtpengine.pid'}",
    ]


def rtpengine_ng(
    settings: Settings, command: Mapping[str, Any], *, timeout: float = 2.0
) -> dict[str, Any]:
    """Send one ng-protocol command (a bencoded dict over UDP) and return the reply dict."""
    try:
        return ng_command(settings.sip_host, settings.rtpengine_ng_port, command,
                          timeout=timeout)
    except NgError as exc:
        raise EdgeError(str(exc)) from exc


def rtpengine_ready(settings: Settings) -> bool:
    """True once rtpengine answers an ng ``ping`` with ``pong``."""
    try:
        reply = rtpengine_ng(settings, {"command": "ping"}, timeout=READY_TIMEOUT_S)
    except (EdgeError, ValueError):
        return False
    return reply.get("result") == "pong"


def end_media_sessions(settings: Settings) -> None:
    """End every rtpengine session (the CLI's ``terminate all``) before rtpengine stops.

    rtpengine 10.5 dies with SIGSEGV (in ``recording_finish``, freeing calls at exit) when
    SIGTERM finds a call still being recorded: it leaves a core file and the recording's
    metadata unfinished. Terminating the sessions first takes the normal path, which
    closes each recording. Raises :class:`EdgeError` when rtpengine does not take it.
    """
    try:
        reply = cli_command(settings.sip_host, settings.rtpengine_cli_port, "terminate all")
    except NgError as exc:
        raise EdgeError(str(exc)) from exc
    if "terminated" not in reply.lower():
        raise EdgeError(f"rtpengine cli 'terminate all' answered {reply.strip()!r}")


# --- helpers --------------------------------------------------------------------------


def wait_until(check: Callable[[], bool], *, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``check`` until it returns True or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def _quoted(value: str) -> str:
    """A string define: kamailio keeps the quotes, so it is a string token in the cfg."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
