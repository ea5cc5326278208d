"""Drive sipp (SIPp 3.6) against the SIP edge: registrations, callees and calls.

Used by the demo traffic generator and the end-to-end tests. Every function runs one
sipp process for exactly one call (``-m 1``) with its own local SIP port, writes sipp's
message trace into ``edge.work_dir`` and reads the outcome back from that trace::

    edge = Edge.from_settings(settings, work_dir=tmp_path)
    register(edge, "102", port=25071)
    callee = start_uas_answer(edge, port=25071, media_port=32600)
    result = call(edge, "101", "102", port=25080, media_port=32610, talk_ms=2000)
    assert result.ok and result.final_code == 200
    callee.wait()

The caller's Call-ID is fixed up front (``-cid_str``) and checked against the trace, so a
test can match each call with the events and CDRs the platform produced for it. sipp is
never daemonised (``-bg`` breaks reply matching); a callee runs as a child process and
:meth:`Uas.stop` ends it by PID. Scenario files live in ``sip-edge/scenarios/``; a
scenario without a function of its own here runs with :func:`run_scenario`.
"""

from __future__ import annotations

import re
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime
from itertools import dropwhile
from pathlib import Path

from core.settings import REPO_ROOT, Settings

__all__ = [
    "SCENARIO_DIR",
    "Edge",
    "SipMessage",
    "SippResult",
    "Uas",
    "register",
    "unregister",
    "start_uas_answer",
    "start_uas_desk",
    "DESK_RING_MS",
    "start_uas_busy",
    "start_uas_ring",
    "start_uas_carrier",
    "start_uas_transferor",
    "call_transferred",
    "call_with_hold",
    "call",
    "call_expect_failure",
    "call_and_cancel",
    "run_scenario",
    "parse_trace",
]

SCENARIO_DIR = REPO_ROOT / "sip-edge" / "scenarios"
SIPP = "sipp"
REGISTER_EXPIRES_S = 300
"""Registration lifetime asked for by :func:`register` (RFC 3261 default is 3600)."""
UNREGISTER_EXPIRES_S = 0
"""Expires: 0 removes the binding (RFC 3261 10.2.2)."""
SIPP_TIMEOUT_S = 30
"""sipp's own global timeout: no single call of the tests lasts this long."""
PROCESS_GRACE_S = 5.0
"""Extra seconds Python waits for sipp after sipp's own timeout should have fired."""
STOP_GRACE_S = 2.0
"""How long a stopped sipp gets to exit after SIGTERM before SIGKILL."""
PORT_BIND_TIMEOUT_S = 5.0
MEDIA_PORT_SPAN = 4
"""Ports sipp binds from its ``-mp`` port on (audio and video, RTP and RTCP)."""
DEFAULT_MEDIA_PORT = 6000
"""sipp's own ``-mp`` default, for a scenario without media (sipp binds it still)."""
POLL_INTERVAL_S = 0.01
MS_PER_S = 1000
FIRST_FINAL_CODE = 200
PROC_NET_UDP = Path("/proc/net/udp")

_TRACE_SEPARATOR = re.compile(r"^-{20,} (.*)$", re.MULTILINE)
_STATUS_LINE = re.compile(r"^SIP/2\.0 (\d{3}) ?(.*)$")
_REQUEST_LINE = re.compile(r"^([A-Z]+) \S+ SIP/2\.0$")


@dataclass(frozen=True)
class Edge:
    """Where sipp sends SIP (the edge), the domain of the extensions, and where logs go."""

    host: str
    port: int
    domain: str
    work_dir: Path
    local_ip: str = "127.0.0.1"

    @classmethod
    def from_settings(cls, settings: Settings, work_dir: Path) -> Edge:
        """The edge described by ``settings``, sipp traces under ``work_dir``."""
        return cls(settings.sip_host, settings.sip_port, settings.sip_domain, work_dir)

    @property
    def remote(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class SipMessage:
    """One SIP message from sipp's trace, as sipp sent or received it."""

    direction: str
    """``sent`` or ``received``."""
    first_line: str
    call_id: str | None
    cseq_method: str | None
    status: int | None
    """Status code of a response, None for a request."""
    method: str | None
    """Method of a request, None for a response."""
    at: float | None = None
    """When sipp sent or received it (epoch seconds, from the trace's local-time stamp)."""
    text: str = ""
    """The whole message as sipp logged it (start line, headers, body)."""


@dataclass(frozen=True)
class SippResult:
    """What one sipp run did: exit code, the call's Call-ID, SIP messages and timing.

    sipp exits 0 when its call followed the scenario to the end, 1 when it failed.
    """

    scenario: str
    exit_code: int
    call_id: str | None
    started: float
    """Epoch seconds when sipp was started."""
    finished: float
    """Epoch seconds when sipp had exited."""
    messages: tuple[SipMessage, ...] = ()
    expected_code: int | None = None
    trace: Path | None = None

    @property
    def elapsed(self) -> float:
        return self.finished - self.started

    @property
    def final_code(self) -> int | None:
        """Final status of the INVITE (or REGISTER) as this side saw it."""
        finals = [
            m.status
            for m in self.messages
            if m.status is not None
            and m.status >= FIRST_FINAL_CODE
            and m.cseq_method in ("INVITE", "REGISTER")
        ]
        return finals[-1] if finals else None

    @property
    def ok(self) -> bool:
        """sipp succeeded and, when a code was expected, the call ended with it."""
        if self.exit_code != 0:
            return False
        return self.expected_code is None or self.final_code == self.expected_code

    @property
    def talk_s(self) -> float | None:
        """Seconds from the 200 OK of the INVITE to the first BYE, as this side saw them."""
        answered = next((m.at for m in self.messages if m.status == FIRST_FINAL_CODE
                         and m.cseq_method == "INVITE"), None)
        bye = next((m.at for m in self.messages if m.method == "BYE"), None)
        if answered is None or bye is None:
            return None
        return bye - answered

    def received(self) -> list[str]:
        """First lines of the messages sipp received, in order (for assertion messages)."""
        return [m.first_line for m in self.messages if m.direction == "received"]


@dataclass
class Uas:
    """A sipp callee running in the background; ``wait()`` or ``stop()`` gives its result."""

    scenario: str
    process: subprocess.Popen[bytes]
    trace: Path
    started: float
    _result: SippResult | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def wait(self, timeout: float = SIPP_TIMEOUT_S) -> SippResult:
        """Wait for the callee to finish its one call, then return its result."""
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return self.stop()
        return self._finish()

    def stop(self) -> SippResult:
        """End the callee by its PID (SIGTERM, then SIGKILL) and return its result."""
        if self.running:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self._finish()

    def _finish(self) -> SippResult:
        if self._result is None:
            self._result = _result(
                self.scenario, self.process.returncode, self.trace, self.started, None
            )
        return self._result


# --- registrations --------------------------------------------------------------------


def register(
    edge: Edge,
    user: str,
    *,
    port: int,
    expires: int = REGISTER_EXPIRES_S,
    password: str | None = None,
    expected_code: int = 200,
) -> SippResult:
    """Register ``user`` with a contact on ``local_ip:port`` (where its callee will run).

    With ``password`` the edge's 401 challenge is answered (digest auth); a wrong one
    ends in 403, so pass ``expected_code=403`` to check a refusal.
    """
    args = ["-s", user, "-key", "expires", str(expires), "-p", str(port)]
    args += _auth_args(user, password)
    return _run(edge, "register.xml", args, label=f"reg-{user}", expected_code=expected_code)


def unregister(edge: Edge, user: str, *, port: int, password: str | None = None) -> SippResult:
    """Remove the registration ``register`` made from the same port (Expires: 0)."""
    args = ["-s", user, "-key", "expires", str(UNREGISTER_EXPIRES_S), "-p", str(port)]
    args += _auth_args(user, password)
    return _run(edge, "register.xml", args, label=f"unreg-{user}", expected_code=200)


def _auth_args(user: str, password: str | None) -> list[str]:
    """sipp's digest credentials (used only when the edge challenges)."""
    return [] if password is None else ["-au", user, "-ap", password]


# --- callees --------------------------------------------------------------------------


def start_uas_answer(
    edge: Edge,
    *,
    port: int,
    media_port: int,
    hangup_after_ms: int | None = None,
    ring_ms: int | None = None,
    accept_reinvites: bool = False,
) -> Uas:
    """A callee that rings, answers and echoes the caller's RTP.

    It waits for the caller's BYE, or with ``hangup_after_ms`` hangs up itself after
    that much talk time (then place the call with ``call(..., callee_hangs_up=True)``).
    With ``ring_ms`` it rings that long before answering (not with ``hangup_after_ms``).
    With ``accept_reinvites`` it answers re-INVITEs (hold, resume) with 200 while it
    waits for the caller's BYE.
    """
    media = ["-mi", edge.local_ip, "-mp", str(media_port), "-rtp_echo"]
    if accept_reinvites:
        if ring_ms is not None or hangup_after_ms is not None:
            raise ValueError("accept_reinvites waits for the caller's BYE, without ring_ms")
        return _spawn_uas(edge, "uas_answer_reinvite.xml", port, media)
    if ring_ms is not None:
        if hangup_after_ms is not None:
            raise ValueError("ring_ms and hangup_after_ms both use sipp's -d")
        return _spawn_uas(edge, "uas_answer_after_ring.xml", port, [*media, "-d", str(ring_ms)])
    if hangup_after_ms is None:
        return _spawn_uas(edge, "uas_answer.xml", port, media)
    return _spawn_uas(edge, "uas_answer_hangup.xml", port, [*media, "-d", str(hangup_after_ms)])


DESK_RING_MS = 4_000
"""How long :func:`start_uas_desk` rings before it answers (uas_desk.xml's CANCEL wait)."""


def start_uas_desk(edge: Edge, *, port: int, media_port: int, timeout_s: int = SIPP_TIMEOUT_S
                   ) -> Uas:
    """A callee that rings ``DESK_RING_MS`` and answers (then waits for the caller's BYE),
    or ends the call with 487 when a CANCEL comes while it rings: a phone that takes
    whatever the edge sends it, the demo's support desk. sipp's global timeout counts from
    its start, idle time included: a desk that waits for its call gets ``timeout_s``
    (the later ``-timeout`` of the command line is the one sipp keeps)."""
    media = ["-mi", edge.local_ip, "-mp", str(media_port), "-rtp_echo",
             "-timeout", f"{timeout_s}s"]
    return _spawn_uas(edge, "uas_desk.xml", port, media)


def start_uas_carrier(edge: Edge, *, port: int, media_port: int, number: str) -> Uas:
    """The carrier on the trunk port: answers an outbound call and, like real carriers,
    puts the called ``number`` in P-Asserted-Identity and in its Contact."""
    media = ["-mi", edge.local_ip, "-mp", str(media_port), "-rtp_echo"]
    return _spawn_uas(edge, "uas_carrier_answer.xml", port, [*media, "-key", "number", number])


def start_uas_transferor(edge: Edge, *, port: int, media_port: int, refer_to: str,
                         talk_ms: int) -> Uas:
    """A callee that answers, talks ``talk_ms`` and then blind-transfers the caller to the
    extension ``refer_to`` (REFER; it takes the 202 and the NOTIFY, then sends BYE)."""
    media = ["-mi", edge.local_ip, "-mp", str(media_port), "-rtp_echo"]
    args = [*media, "-d", str(talk_ms), "-key", "refer_to", refer_to]
    return _spawn_uas(edge, "uas_answer_refer.xml", port, args)


def start_uas_busy(edge: Edge, *, port: int) -> Uas:
    """A callee that rejects the call with 486 Busy Here."""
    return _spawn_uas(edge, "uas_busy.xml", port, [])


def start_uas_ring(edge: Edge, *, port: int) -> Uas:
    """A callee that rings (180, repeated) and never answers; it ends with 487 on CANCEL.

    The CANCEL comes from the caller, or from the edge when its no-answer timer fires.
    """
    return _spawn_uas(edge, "uas_ring.xml", port, [])


# --- calls ----------------------------------------------------------------------------


def call(
    edge: Edge,
    caller: str,
    callee: str,
    *,
    port: int,
    media_port: int,
    talk_ms: int,
    callee_hangs_up: bool = False,
    password: str | None = None,
    referred_by: str | None = None,
) -> SippResult:
    """``caller`` calls ``callee`` (PCMA audio) and expects 200.

    The caller hangs up after ``talk_ms``; with ``callee_hangs_up`` it talks until the
    callee's BYE instead (``talk_ms`` is then the callee's business). With ``password``
    the caller answers the edge's 407 digest challenge first.
    """
    args = _call_args(caller, callee, port, media_port)
    label = f"call-{caller}-{callee}"
    if callee_hangs_up:
        scenario = "uac_call_until_bye.xml" if password is None else "uac_call_until_bye_auth.xml"
        args += _auth_args(caller, password)
        return _run(edge, scenario, args, label=label, expected_code=200)
    args += ["-d", str(talk_ms)] + _auth_args(caller, password)
    scenario = "uac_call.xml" if password is None else "uac_call_auth.xml"
    if referred_by is not None:
        if password is None:
            raise ValueError("the transferred call scenario authenticates: pass password")
        scenario = "uac_call_auth_referred.xml"
        args += ["-key", "referred_by", referred_by]
    return _run(edge, scenario, args, label=label, expected_code=200)


def call_transferred(
    edge: Edge, caller: str, callee: str, *, port: int, media_port: int, password: str
) -> SippResult:
    """``caller`` calls ``callee``, who answers and REFERs it elsewhere: the caller accepts
    (202), NOTIFYs and takes the BYE. The Refer-To target is in the trace (the caller then
    places the new call with ``call(..., referred_by=callee)``)."""
    args = _call_args(caller, callee, port, media_port) + _auth_args(caller, password)
    return _run(edge, "uac_call_auth_transferred.xml", args, label=f"xfer-{caller}-{callee}",
                expected_code=200)


def call_with_hold(
    edge: Edge, caller: str, callee: str, *, port: int, media_port: int, hold_ms: int,
    password: str,
) -> SippResult:
    """``caller`` calls ``callee`` (who must accept re-INVITEs), talks 500 ms, holds the
    call (re-INVITE a=sendonly) for ``hold_ms``, resumes it (a=sendrecv), talks 500 ms
    more and hangs up; each re-INVITE must get 200."""
    args = _call_args(caller, callee, port, media_port) + ["-d", str(hold_ms)]
    args += _auth_args(caller, password)
    return _run(edge, "uac_call_auth_hold.xml", args, label=f"hold-{caller}-{callee}",
                expected_code=200)


def call_expect_failure(
    edge: Edge,
    caller: str,
    callee: str,
    expected_code: int,
    *,
    port: int,
    media_port: int,
    password: str | None = None,
) -> SippResult:
    """``caller`` calls ``callee`` and the call fails; ``ok`` only with ``expected_code``."""
    args = _call_args(caller, callee, port, media_port) + _auth_args(caller, password)
    label = f"fail-{caller}-{callee}"
    scenario = "uac_fail.xml" if password is None else "uac_fail_auth.xml"
    return _run(edge, scenario, args, label=label, expected_code=expected_code)


def call_and_cancel(
    edge: Edge,
    caller: str,
    callee: str,
    *,
    ring_ms: int,
    port: int,
    media_port: int,
    password: str | None = None,
) -> SippResult:
    """``caller`` calls ``callee`` and hangs up (CANCEL) after ``ring_ms`` of ringing."""
    args = _call_args(caller, callee, port, media_port) + ["-d", str(ring_ms)]
    args += _auth_args(caller, password)
    label = f"cancel-{caller}-{callee}"
    scenario = "uac_cancel.xml" if password is None else "uac_cancel_auth.xml"
    return _run(edge, scenario, args, label=label, expected_code=487)


def _call_args(caller: str, callee: str, port: int, media_port: int) -> list[str]:
    return ["-s", callee, "-key", "caller", caller, "-p", str(port), "-mp", str(media_port)]


# --- running sipp ---------------------------------------------------------------------


def _base_command(edge: Edge, scenario: str, trace: Path, remote: list[str]) -> list[str]:
    """sipp options shared by every run; ``remote`` is ``[host:port]`` for a UAC."""
    return [
        SIPP,
        *remote,
        "-sf",
        str(SCENARIO_DIR / scenario),
        "-i",
        edge.local_ip,
        "-mi",
        edge.local_ip,
        "-key",
        "domain",
        edge.domain,
        "-m",
        "1",
        "-nostdin",
        "-timeout",
        f"{SIPP_TIMEOUT_S}s",
        "-timeout_error",
        "-trace_msg",
        "-message_file",
        str(trace),
        "-trace_err",
        "-error_file",
        str(trace.with_suffix(".errors.log")),
    ]


def run_scenario(
    edge: Edge,
    scenario: str,
    args: list[str],
    *,
    label: str,
    expected_code: int | None = None,
) -> SippResult:
    """Run any scenario of ``sip-edge/scenarios/`` as a UAC for one call and wait for it.

    For scenarios the functions above do not cover (a test's own, e.g. a call that only
    the edge ends). ``args`` are the scenario's own sipp options (``-s``, ``-key NAME
    VALUE``, ``-p`` local SIP port, ``-mp`` media port, ``-au``/``-ap``, ``-d``); the
    edge address, local IP, ``-key domain``, ``-m 1``, sipp's timeout and the message
    trace are added as for every run. The Call-ID is ``<label>-<random>-1@<local_ip>``,
    so ``label`` names the run in traces and events. With ``expected_code`` the result is
    ``ok`` only if the INVITE (or REGISTER) ended with that final status.
    """
    if not (SCENARIO_DIR / scenario).is_file():
        raise ValueError(f"no scenario {scenario} in {SCENARIO_DIR}")
    return _run(edge, scenario, args, label=label, expected_code=expected_code)


def _run(
    edge: Edge, scenario: str, args: list[str], *, label: str, expected_code: int | None
) -> SippResult:
    """Run sipp as a UAC for one call and wait for it (see :func:`run_scenario`)."""
    prefix = f"{label}-{secrets.token_hex(4)}"
    trace = _trace_path(edge, prefix)
    # -cid_str: sipp puts exactly this in Call-ID (%u call number, %s local IP)
    command = _base_command(edge, scenario, trace, [edge.remote])
    started = time.time()
    completed = subprocess.run(
        [*command, "-cid_str", f"{prefix}-%u@%s", *_free_media(args)],
        cwd=edge.work_dir,
        stdin=subprocess.DEVNULL,
        stdout=trace.with_suffix(".out").open("wb"),
        stderr=subprocess.STDOUT,
        timeout=SIPP_TIMEOUT_S + PROCESS_GRACE_S,
        check=False,
    )
    expected_call_id = f"{prefix}-1@{edge.local_ip}"
    result = _result(scenario, completed.returncode, trace, started, expected_code)
    if result.call_id not in (None, expected_call_id):
        raise RuntimeError(f"sipp used Call-ID {result.call_id}, not {expected_call_id}")
    return result


def _spawn_uas(edge: Edge, scenario: str, port: int, media: list[str]) -> Uas:
    """Start sipp as a UAS on ``port`` and return once it listens there."""
    trace = _trace_path(edge, f"uas-{port}-{secrets.token_hex(4)}")
    command = [*_base_command(edge, scenario, trace, []), "-p", str(port),
               *_free_media(media)]
    started = time.time()
    process = subprocess.Popen(
        command,
        cwd=edge.work_dir,
        stdin=subprocess.DEVNULL,
        stdout=trace.with_suffix(".out").open("wb"),
        stderr=subprocess.STDOUT,
    )
    uas = Uas(scenario, process, trace, started)
    if not _wait_udp_bound(edge.local_ip, port, process):
        uas.stop()
        log = trace.with_suffix(".out")
        said = log.read_text(errors="replace")[-1500:] if log.exists() else ""
        raise RuntimeError(f"sipp {scenario} did not start on port {port} (exit code "
                           f"{process.returncode}): see {log}; it said:\n{said}")
    return uas


def _free_media(args: list[str]) -> list[str]:
    """``args`` with a ``-mp`` whose ports nothing holds (sipp's default if none given).

    sipp exits at start when a media port is taken ("Unable to bind audio RTP socket").
    The tests' media ports lie in the kernel's ephemeral range, where other processes'
    UDP sockets (Kamailio's to rtpengine, for one) can sit for good; a CI run lost a
    test that way. So the given port is moved on, ``MEDIA_PORT_SPAN`` at a time, to the
    first whose ports are all free now."""
    args = list(args)
    if "-mp" in args:
        at = args.index("-mp") + 1
        args[at] = str(_first_free_media_port(int(args[at])))
    else:
        args += ["-mp", str(_first_free_media_port(DEFAULT_MEDIA_PORT))]
    return args


def _first_free_media_port(port: int, tries: int = 50) -> int:
    for candidate in range(port, port + tries * MEDIA_PORT_SPAN, MEDIA_PORT_SPAN):
        if all(_udp_port_free(p) for p in range(candidate, candidate + MEDIA_PORT_SPAN)):
            return candidate
    return port  # sipp will say which port it could not bind


def _udp_port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _trace_path(edge: Edge, prefix: str) -> Path:
    edge.work_dir.mkdir(parents=True, exist_ok=True)
    return edge.work_dir / f"{prefix}.messages.log"


def _wait_udp_bound(ip: str, port: int, process: subprocess.Popen[bytes]) -> bool:
    """Poll /proc/net/udp until something listens on ip:port (sipp has no ready signal)."""
    wanted = f"{_proc_net_ip(ip)}:{port:04X}"
    deadline = time.monotonic() + PORT_BIND_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        if any(line.split()[1] == wanted for line in PROC_NET_UDP.read_text().splitlines()[1:]):
            return True
        time.sleep(POLL_INTERVAL_S)
    return False


def _proc_net_ip(ip: str) -> str:
    """An IPv4 address the way /proc/net/udp prints it (little-endian hex)."""
    return "".join(f"{int(octet):02X}" for octet in reversed(ip.split(".")))


def _result(
    scenario: str, exit_code: int, trace: Path, started: float, expected_code: int | None
) -> SippResult:
    messages = parse_trace(trace.read_text(errors="replace")) if trace.exists() else []
    call_ids = [m.call_id for m in messages if m.call_id]
    return SippResult(
        scenario=scenario,
        exit_code=exit_code,
        call_id=call_ids[0] if call_ids else None,
        started=started,
        finished=time.time(),
        messages=tuple(messages),
        expected_code=expected_code,
        trace=trace,
    )


# --- trace parsing --------------------------------------------------------------------


def parse_trace(text: str) -> list[SipMessage]:
    """The SIP messages of a sipp ``-trace_msg`` file, in the order sipp logged them."""
    messages = []
    parts = _TRACE_SEPARATOR.split(text)  # [before, stamp1, block1, stamp2, block2, ...]
    for stamp, block in zip(parts[1::2], parts[2::2], strict=True):
        message = _parse_block(block, _stamp(stamp))
        if message is not None:
            messages.append(message)
    return messages


def _stamp(text: str) -> float | None:
    """sipp's ``YYYY-MM-DD HH:MM:SS.ffffff`` (local time) as epoch seconds."""
    try:
        return datetime.strptime(text.strip()[:26], "%Y-%m-%d %H:%M:%S.%f").timestamp()
    except ValueError:
        return None


def _parse_block(block: str, at: float | None = None) -> SipMessage | None:
    lines = [line.rstrip("\r") for line in block.strip().splitlines()]
    if len(lines) < 2 or "message" not in lines[0]:
        return None
    direction = "received" if "received" in lines[0] else "sent"
    sip_lines = list(dropwhile(lambda line: not line.strip(), lines[1:]))
    if not sip_lines:
        return None
    first = sip_lines[0].strip()
    headers = _headers(sip_lines[1:])
    status = _STATUS_LINE.match(first)
    request = _REQUEST_LINE.match(first)
    cseq = headers.get("cseq", "").split()
    return SipMessage(
        direction=direction,
        first_line=first,
        call_id=headers.get("call-id"),
        cseq_method=cseq[1] if len(cseq) > 1 else None,
        status=int(status.group(1)) if status else None,
        method=request.group(1) if request else None,
        at=at,
        text="\n".join(sip_lines),
    )


def _headers(lines: list[str]) -> dict[str, str]:
    """First value of each header up to the blank line before the body (lower-case names)."""
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not line.strip() or not sep:
            break
        headers.setdefault(name.strip().lower(), value.strip())
    return headers
