"""Provisioning of the SIP edge: a declarative TOML file -> Kamailio htables, live.

The file names tenants (one SIP domain each) with their extensions, ring groups, DIDs,
forwarding rules and trunk::

    [tenant.acme]
    domain = "pbx.test"
    company_number = "+74951230000"     # caller ID of outbound calls
    trunk = "127.0.0.1:5090"            # where outside numbers are sent
    trunk_sources = ["127.0.0.1:5091"]  # who may send DID calls (default: the trunk)
    record = false
    time_zone = "Europe/Moscow"         # IANA zone of the tenant's days, hours, reports
    blacklist = ["+74950000666"]        # callers from the trunk refused with 603
    manager_timeout = 15                # seconds a CRM client's responsible manager
                                        # rings before the DID's own target (edge.live)

    [tenant.acme.extension.101]
    password = "secret101"
    mobile = "+79161234567"
    no_answer_timeout = 20              # seconds, 20 by default
    forward = { no_answer = "mobile", busy = "ext:102", unregistered = "mobile" }
    whitelist = ["+79035550101"]        # callers sent straight here, whatever DID

    [tenant.acme.group.sales]
    strategy = "ring_all"               # or "sequential"; or, per the streams' live
                                        # agent state (edge.live), skipping members on
                                        # a call, ringing, in wrap-up or offline:
                                        # "longest_idle" (idle the longest first),
                                        # "least_calls" (fewest calls answered today in
                                        # the tenant's zone first, ties: idle the
                                        # longest, then group order) or "round_robin"
                                        # (starting after the member rung last); all
                                        # three hunt in group order when that live
                                        # state is missing or stale
    members = ["102", "103"]
    forward = { no_answer = "ext:101" }

    [tenant.acme.group.support]
    strategy = "longest_idle"
    members = ["101", "102"]
    queue = { max_wait_s = 60, max_length = 5, overflow = "ext:101" }
                                        # a waiting queue: when the streams say no
                                        # member is available the caller waits (180),
                                        # the longest-waiting caller is offered the next
                                        # member that frees up; after max_wait_s, or at
                                        # once beyond max_length callers, the call goes to
                                        # overflow (ext:, group: or an outside number)

    [tenant.acme.schedule.office]       # opening hours (edge.schedules), tenant's zone
    hours = { mon = "09:00-18:00", fri = "09:00-17:00" }
    holidays = ["2026-12-31"]
    closed = "ext:101"                  # out-of-hours target, or "reply" (480 Closed)

    [tenant.acme.did."74951230001"]
    to = "group:sales"                  # "ext:<user>" or "group:<name>"
    record = true
    schedule = "office"                 # optional

    [tenant.acme.speed_dial]            # short numbers: code = target
    "11" = "+79161234567"               # an outside number (through the trunk)
    "12" = "group:sales"

    [tenant.acme.mask]                  # number masking: an agent dials *77<code>;
    "4501" = "+79035550199"             # the call goes out to the client's real number,
                                        # always recorded; agents and events see only
                                        # the code and +7********99

    [tenant.acme.crm.amocrm]            # the tenant's own CRM connection (core.tenant_crm):
    base_url = "https://acme.amocrm.ru" # keys = the crm_amocrm_* settings without prefix
    client_id = "..."
    client_secret = "..."
    redirect_uri = "https://tawag.example/oauth"
    users = { "101" = "8001" }

    [tenant.acme.zadarma]               # the tenant's calls come from a Zadarma account
    secret = "..."                      # (core.zadarma): its API secret checks each Signature

Group members pick up each other's ringing calls by dialling ``*8`` (call pickup).

Forwarding targets are ``ext:<user>``, ``group:<name>``, ``mobile`` (the extension's
mobile number) or an outside number (``+79161234567``), sent through the trunk.

:func:`check` only validates; every :class:`ProvisioningError` names the file, the line
and what is wrong. :func:`apply` compiles the file to htable entries
(:func:`compile_tenant`, pure), sends them over JSON-RPC (``htable.sets``/``seti``,
``htable.delete`` for stale keys) and records the applied state per tenant in the
compacted topic ``tawag.provisioning`` (key = tenant). :func:`restore` re-applies the
last recorded state after a Kamailio restart. Passwords never leave this module: the
state and Kamailio only hold HA1 = MD5(user:realm:password), what digest auth needs.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.settings import Settings
from core.tenant_crm import CRMS, crm_problems
from core.timezones import is_valid_zone
from core.zadarma import zadarma_problems
from edge import schedules
from edge.control import kamailio_rpc

__all__ = [
    "DEFAULT_NO_ANSWER_S",
    "DEFAULT_MANAGER_TIMEOUT_S",
    "PROVISIONING_TOPIC",
    "ProvisioningError",
    "ProvisioningFailed",
    "TenantState",
    "RpcCall",
    "check",
    "load",
    "compile_tenant",
    "ha1",
    "masked_number",
    "caller_key",
    "plan",
    "apply",
    "apply_states",
    "restore",
    "read_states",
    "publish_states",
    "provision_started_edge",
    "restore_restarted_edge",
]

DEFAULT_NO_ANSWER_S = 20
"""Seconds an extension or group rings before its no-answer rule applies."""
DEFAULT_MANAGER_TIMEOUT_S = 15
"""Seconds a client's responsible manager rings before the DID's own target does."""
PROVISIONING_TOPIC = "tawag.provisioning"
"""Compacted topic of applied states, key = tenant (proposed setting: topic_provisioning)."""
CREDS_TABLE = "creds"
PBX_TABLE = "pbx"
STATE_FORMAT = 1
FORWARD_REASONS = ("no_answer", "busy", "unregistered")
STRATEGIES = {"ring_all": "parallel", "sequential": "serial", "longest_idle": "idle",
              "least_calls": "least", "round_robin": "rr"}
"""Strategy name -> the mode route[RING_GROUP] reads; idle, least and rr hunt on the
streams' live facts (route[RING_LIVE_GROUP])."""
MAX_TIMEOUT_S = 600

_USER = re.compile(r"^[0-9]{2,6}$")
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_NUMBER = re.compile(r"^\+?[0-9]{7,15}$")
_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")
_SPEED_CODE = re.compile(r"^[0-9]{1,4}$")
_MASK_CODE = re.compile(r"^[0-9]{2,8}$")
MASK_PREFIX = "*77"
"""An agent dials MASK_PREFIX + a client's code to reach the client's hidden number."""
_HOSTPORT = re.compile(r"^(\d{1,3}(?:\.\d{1,3}){3})(?::(\d{1,5}))?$")

_TENANT_KEYS = {"domain", "company_number", "trunk", "trunk_sources", "record",
                "time_zone", "extension", "group", "did", "speed_dial", "mask", "blacklist",
                "schedule", "crm", "zadarma", "manager_timeout"}
_EXTENSION_KEYS = {"password", "mobile", "no_answer_timeout", "record", "forward",
                   "whitelist"}
_GROUP_KEYS = {"strategy", "members", "ring_timeout", "forward", "queue"}
_QUEUE_KEYS = {"max_wait_s", "max_length", "overflow"}
MAX_QUEUE_LENGTH = 100
_DID_KEYS = {"to", "record", "schedule"}
_SCHEDULE_KEYS = {"hours", "holidays", "closed"}


@dataclass(frozen=True)
class ProvisioningError:
    """One defect of a provisioning file: ``str()`` gives ``file:line: message``."""

    path: Path
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


class ProvisioningFailed(ValueError):
    """The file did not validate, or Kamailio refused the update; ``errors`` say why."""

    def __init__(self, errors: list[ProvisioningError]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors


@dataclass(frozen=True)
class TenantState:
    """What one tenant puts into Kamailio: htable entries only (HA1, never passwords)."""

    tenant: str
    domain: str
    creds: dict[str, str] = field(default_factory=dict)
    """htable creds: ``user@domain`` -> HA1."""
    strings: dict[str, str] = field(default_factory=dict)
    """htable pbx string entries."""
    ints: dict[str, int] = field(default_factory=dict)
    """htable pbx integer entries."""

    def to_json(self) -> bytes:
        data = {"format": STATE_FORMAT, "tenant": self.tenant, "domain": self.domain,
                "creds": self.creds, "strings": self.strings, "ints": self.ints}
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> TenantState:
        data = json.loads(raw)
        if data.get("format") != STATE_FORMAT:
            raise ValueError(f"provisioning state: unknown format {data.get('format')!r}")
        return cls(data["tenant"], data["domain"], dict(data["creds"]),
                   dict(data["strings"]), {k: int(v) for k, v in data["ints"].items()})

    def entries(self) -> list[tuple[str, str, str | int]]:
        """Every (table, key, value) of the state."""
        out: list[tuple[str, str, str | int]] = [(CREDS_TABLE, k, v) for k, v in self.creds.items()]
        out += [(PBX_TABLE, k, v) for k, v in self.strings.items()]
        out += [(PBX_TABLE, k, v) for k, v in self.ints.items()]
        return sorted(out, key=lambda e: (e[0], e[1]))


@dataclass(frozen=True)
class RpcCall:
    """One Kamailio JSON-RPC call: ``method`` with positional ``params``."""

    method: str
    params: tuple[Any, ...]


# --- parsing and validation -------------------------------------------------------------


def check(path: Path) -> list[ProvisioningError]:
    """Validate a provisioning file; an empty list means it can be applied."""
    _, errors = _parse(Path(path))
    return errors


def load(path: Path, now: datetime | None = None) -> dict[str, TenantState]:
    """Parse, validate and compile a file: tenant -> state; raises ProvisioningFailed.
    Schedules are compiled from ``now`` (the present by default)."""
    tenants, errors = _parse(Path(path))
    if errors:
        raise ProvisioningFailed(errors)
    return {name: compile_tenant(name, spec, now) for name, spec in tenants.items()}


def _parse(path: Path) -> tuple[dict[str, dict[str, Any]], list[ProvisioningError]]:
    try:
        text = path.read_text()
    except OSError as exc:
        return {}, [ProvisioningError(path, 0, f"cannot read: {exc.strerror}")]
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = int(m.group(1)) if (m := re.search(r"line (\d+)", str(exc))) else 0
        return {}, [ProvisioningError(path, line, f"not valid TOML: {exc}")]
    report = _Reporter(path, _key_lines(text))
    tenants = doc.get("tenant")
    unknown = set(doc) - {"tenant"}
    for key in sorted(unknown):
        report((key,), f"unknown top-level key {key!r} (only [tenant.<name>] tables)")
    if not isinstance(tenants, dict) or not tenants:
        report(("tenant",), "no [tenant.<name>] table")
        return {}, report.errors
    for name, spec in tenants.items():
        _check_tenant(report, name, spec)
    _check_unique_domains(report, tenants)
    _check_unique_portals(report, tenants)
    return tenants, report.errors


class _Reporter:
    """Collects errors, locating each dotted key path at its line in the file."""

    def __init__(self, path: Path, lines: dict[tuple[str, ...], int]) -> None:
        self.path = path
        self.lines = lines
        self.errors: list[ProvisioningError] = []

    def __call__(self, where: tuple[str, ...], message: str) -> None:
        self.errors.append(ProvisioningError(self.path, self.line_of(where), message))

    def line_of(self, where: tuple[str, ...]) -> int:
        """Line of the key, or of its nearest enclosing table that has one."""
        for end in range(len(where), 0, -1):
            if where[:end] in self.lines:
                return self.lines[where[:end]]
        return 1


_TABLE_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY_VALUE = re.compile(r"^\s*((?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')"
                        r"(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'))*)\s*=")


def _key_lines(text: str) -> dict[tuple[str, ...], int]:
    """First line of every table header and ``key =`` line, by full dotted key path."""
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), start=1):
        if header := _TABLE_HEADER.match(line):
            table = _split_key(header.group(1))
            for end in range(1, len(table) + 1):
                lines.setdefault(table[:end], number)
        elif pair := _KEY_VALUE.match(line):
            path = table + _split_key(pair.group(1))
            lines.setdefault(path, number)
            if line.rstrip().endswith("{") or "{" in line:
                _inline_keys(line, path, number, lines)
    return lines


def _inline_keys(line: str, path: tuple[str, ...], number: int,
                 lines: dict[tuple[str, ...], int]) -> None:
    """Keys of a one-line inline table (``forward = { busy = "ext:102" }``)."""
    inner = line[line.index("{") + 1:]
    for match in re.finditer(r"([A-Za-z0-9_-]+)\s*=", inner):
        lines.setdefault((*path, match.group(1)), number)


def _split_key(raw: str) -> tuple[str, ...]:
    parts = re.findall(r"\"([^\"]*)\"|'([^']*)'|([A-Za-z0-9_-]+)", raw)
    return tuple(next(p for p in groups if p != "") if any(groups) else "" for groups in parts)


def _check_tenant(report: _Reporter, name: str, spec: Any) -> None:
    where = ("tenant", name)
    if not isinstance(spec, dict):
        report(where, f"tenant {name!r} must be a table")
        return
    _unknown_keys(report, where, spec, _TENANT_KEYS)
    if not isinstance(spec.get("domain"), str) or not _DOMAIN.match(spec["domain"]):
        report((*where, "domain"), "domain: a SIP domain such as \"pbx.example\" is required")
    cid = spec.get("company_number")
    if cid is not None and not _is_number(cid):
        report((*where, "company_number"), f"company_number: not a phone number: {cid!r}")
    trunk = spec.get("trunk")
    if trunk is not None and not _is_hostport(trunk, port_required=True):
        report((*where, "trunk"), f"trunk: expected \"<ip>:<port>\", got {trunk!r}")
    sources = spec.get("trunk_sources", [])
    if not isinstance(sources, list) or not all(_is_hostport(s) for s in sources):
        report((*where, "trunk_sources"), "trunk_sources: a list of \"<ip>\" or \"<ip>:<port>\"")
    _check_bool(report, (*where, "record"), spec.get("record"))
    _check_timeout(report, (*where, "manager_timeout"), spec.get("manager_timeout"))
    zone_name = spec.get("time_zone")
    if zone_name is not None and not is_valid_zone(zone_name):
        report((*where, "time_zone"), f"time_zone: not an IANA time zone such as "
                                      f"\"Europe/Moscow\": {zone_name!r}")
    extensions = _table(report, (*where, "extension"), spec.get("extension"))
    groups = _table(report, (*where, "group"), spec.get("group"))
    dids = _table(report, (*where, "did"), spec.get("did"))
    for user, ext in extensions.items():
        _check_extension(report, (*where, "extension", user), user, ext, extensions, groups)
    for group, grp in groups.items():
        _check_group(report, (*where, "group", group), group, grp, extensions, groups)
    for number, did in dids.items():
        _check_did(report, (*where, "did", number), number, did, extensions, groups)
    calendars = _table(report, (*where, "schedule"), spec.get("schedule"))
    for name_, schedule in calendars.items():
        _check_schedule(report, (*where, "schedule", name_), name_, schedule, extensions,
                        groups)
    for number, did in dids.items():
        used = did.get("schedule") if isinstance(did, dict) else None
        if used is not None and used not in calendars:
            report((*where, "did", number, "schedule"),
                   f"did {number}: schedule {used!r} is not defined in this tenant")
        elif used is not None and zone_name is None:
            report((*where, "did", number, "schedule"),
                   f"did {number}: a schedule needs the tenant's time_zone")
    speed = _table(report, (*where, "speed_dial"), spec.get("speed_dial"))
    for code, target in speed.items():
        at = (*where, "speed_dial", code)
        if not _SPEED_CODE.match(code):
            report(at, f"speed_dial {code!r}: codes are 1-4 digits")
        elif code in extensions or code in groups:
            report(at, f"speed_dial {code!r} is also an extension or group of this tenant")
        problem = _target_problem(target, extensions, groups, allow_outside=True,
                                  has_mobile=False)
        if problem:
            report(at, f"speed_dial {code}: {problem}")
    masks = _table(report, (*where, "mask"), spec.get("mask"))
    for code, number in masks.items():
        at = (*where, "mask", code)
        if not _MASK_CODE.match(code):
            report(at, f"mask {code!r}: client codes are 2-8 digits")
        if not _is_number(number):
            report(at, f"mask {code}: not a phone number: {number!r}")
    _check_caller_lists(report, where, spec.get("blacklist"), extensions)
    uses_outside = _uses_outside_numbers(extensions, groups) or bool(masks) or any(
        isinstance(t, str) and _NUMBER.match(t) for t in speed.values())
    if trunk is None and uses_outside:
        report((*where, "trunk"), "an outside number is a forwarding target but no trunk is set")
    if "crm" in spec:
        for at, message in crm_problems(spec["crm"]):
            report((*where, "crm", *at), message)
    if "zadarma" in spec:
        for at, message in zadarma_problems(spec["zadarma"]):
            report((*where, "zadarma", *at), message)


def _numbers(report: _Reporter, where: tuple[str, ...], value: Any) -> list[str]:
    """A list of phone numbers, as the edge compares them (E.164 digits without "+")."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(_is_number(n) for n in value):
        report(where, f"{where[-1]}: a list of phone numbers such as \"+79161234567\"")
        return []
    return [caller_key(n) for n in value]


def _check_caller_lists(report: _Reporter, where: tuple[str, ...], blacklist: Any,
                        extensions: dict[str, Any]) -> None:
    """A number is white-listed by one extension at most, and never also black-listed."""
    blocked = set(_numbers(report, (*where, "blacklist"), blacklist))
    owner: dict[str, str] = {}
    for user, ext in extensions.items():
        if not isinstance(ext, dict):
            continue
        at = (*where, "extension", user, "whitelist")
        for number in _numbers(report, at, ext.get("whitelist")):
            if number in blocked:
                report(at, f"extension {user}: +{number} is also in the tenant's blacklist")
            elif owner.setdefault(number, user) != user:
                report(at, f"extension {user}: +{number} is already white-listed for "
                           f"extension {owner[number]}")


def caller_key(number: str) -> str:
    """A caller's number as the white and black lists hold it and the edge looks it up:
    the E.164 digits without "+" (the carrier sends the From user with or without it)."""
    return number.lstrip("+")


def _check_extension(report: _Reporter, where: tuple[str, ...], user: str, ext: Any,
                     extensions: dict[str, Any], groups: dict[str, Any]) -> None:
    if not _USER.match(user):
        report(where, f"extension {user!r}: extensions are 2-6 digits")
    if not isinstance(ext, dict):
        report(where, f"extension {user!r} must be a table")
        return
    _unknown_keys(report, where, ext, _EXTENSION_KEYS)
    password = ext.get("password")
    if not isinstance(password, str) or len(password) < 6:
        report((*where, "password"), f"extension {user}: password of at least 6 characters "
                                     "is required")
    mobile = ext.get("mobile")
    if mobile is not None and not _is_number(mobile):
        report((*where, "mobile"), f"extension {user}: mobile is not a phone number: {mobile!r}")
    _check_timeout(report, (*where, "no_answer_timeout"), ext.get("no_answer_timeout"))
    _check_bool(report, (*where, "record"), ext.get("record"))
    _check_forward(report, where, ext.get("forward"), extensions, groups,
                   has_mobile=mobile is not None)


def _check_group(report: _Reporter, where: tuple[str, ...], name: str, grp: Any,
                 extensions: dict[str, Any], groups: dict[str, Any]) -> None:
    if not _NAME.match(name):
        report(where, f"group {name!r}: names are lower-case letters, digits, - and _")
    if not isinstance(grp, dict):
        report(where, f"group {name!r} must be a table")
        return
    _unknown_keys(report, where, grp, _GROUP_KEYS)
    if grp.get("strategy", "ring_all") not in STRATEGIES:
        report((*where, "strategy"), f"group {name}: strategy must be one of "
                                     f"{', '.join(STRATEGIES)}, got {grp.get('strategy')!r}")
    members = grp.get("members")
    if not isinstance(members, list) or not members:
        report((*where, "members"), f"group {name}: members must be a non-empty list")
    else:
        for member in members:
            if member not in extensions:
                report((*where, "members"), f"group {name}: member {member!r} is not an "
                                            "extension of this tenant")
    _check_timeout(report, (*where, "ring_timeout"), grp.get("ring_timeout"))
    _check_forward(report, where, grp.get("forward"), extensions, groups, has_mobile=False)
    _check_queue(report, where, name, grp, extensions, groups)


def _check_queue(report: _Reporter, where: tuple[str, ...], name: str, grp: dict[str, Any],
                 extensions: dict[str, Any], groups: dict[str, Any]) -> None:
    queue = grp.get("queue")
    if queue is None:
        return
    at = (*where, "queue")
    if not isinstance(queue, dict):
        report(at, f"group {name}: queue must be a table "
                   "{ max_wait_s = <s>, max_length = <callers>, overflow = <target> }")
        return
    _unknown_keys(report, at, queue, _QUEUE_KEYS)
    if grp.get("strategy", "ring_all") != "longest_idle":
        report(at, f"group {name}: a queue waits for the streams' agent state, so the "
                   "group's strategy must be longest_idle")
    for key in sorted(_QUEUE_KEYS - queue.keys()):
        report(at, f"group {name}: queue: {key} is required")
    if "max_wait_s" in queue:
        _check_timeout(report, (*at, "max_wait_s"), queue["max_wait_s"])
    length = queue.get("max_length")
    if "max_length" in queue and (isinstance(length, bool) or not isinstance(length, int)
                                  or not 1 <= length <= MAX_QUEUE_LENGTH):
        report((*at, "max_length"), f"max_length: whole number of callers between 1 and "
                                    f"{MAX_QUEUE_LENGTH}, got {length!r}")
    if "overflow" in queue:
        overflow = queue["overflow"]
        problem = _target_problem(overflow, extensions, groups, allow_outside=True,
                                  has_mobile=False)
        if problem is None and overflow == f"group:{name}":
            problem = "a queue cannot overflow to its own group"
        if problem:
            report((*at, "overflow"), f"group {name}: queue overflow: {problem}")


def _check_schedule(report: _Reporter, where: tuple[str, ...], name: str, schedule: Any,
                    extensions: dict[str, Any], groups: dict[str, Any]) -> None:
    if not isinstance(schedule, dict):
        report(where, f"schedule {name!r} must be a table")
        return
    _unknown_keys(report, where, schedule, _SCHEDULE_KEYS)
    for problem in schedules.hours_problems(schedule.get("hours")):
        report((*where, "hours"), f"schedule {name}: {problem}")
    for problem in schedules.holiday_problems(schedule.get("holidays")):
        report((*where, "holidays"), f"schedule {name}: {problem}")
    closed = schedule.get("closed")
    problem = None if closed == "reply" else _target_problem(
        closed, extensions, groups, allow_outside=True, has_mobile=False)
    if problem:
        report((*where, "closed"), f"schedule {name}: closed: {problem} "
                                   "(or \"reply\": answered 480 Closed)")


def _check_did(report: _Reporter, where: tuple[str, ...], number: str, did: Any,
               extensions: dict[str, Any], groups: dict[str, Any]) -> None:
    if not _NUMBER.match(number):
        report(where, f"did {number!r}: not a phone number")
    if not isinstance(did, dict):
        report(where, f"did {number!r} must be a table")
        return
    _unknown_keys(report, where, did, _DID_KEYS)
    target = did.get("to")
    problem = _target_problem(target, extensions, groups, allow_outside=False, has_mobile=False)
    if problem:
        report((*where, "to"), f"did {number}: {problem}")
    _check_bool(report, (*where, "record"), did.get("record"))


def _check_forward(report: _Reporter, where: tuple[str, ...], forward: Any,
                   extensions: dict[str, Any], groups: dict[str, Any], *,
                   has_mobile: bool) -> None:
    if forward is None:
        return
    if not isinstance(forward, dict):
        report((*where, "forward"), "forward must be a table of reason = target")
        return
    for reason, target in forward.items():
        if reason not in FORWARD_REASONS:
            report((*where, "forward", reason), f"forward: unknown reason {reason!r} "
                                                f"(one of {', '.join(FORWARD_REASONS)})")
            continue
        problem = _target_problem(target, extensions, groups, allow_outside=True,
                                  has_mobile=has_mobile)
        if problem:
            report((*where, "forward", reason), f"forward {reason}: {problem}")


def _target_problem(target: Any, extensions: dict[str, Any], groups: dict[str, Any], *,
                    allow_outside: bool, has_mobile: bool) -> str | None:
    """None when ``target`` is valid, else what is wrong with it."""
    if not isinstance(target, str):
        return f"target must be a string, got {target!r}"
    kind, _, name = target.partition(":")
    if kind == "ext" and name in extensions:
        return None
    if kind == "group" and name in groups:
        return None
    if kind in ("ext", "group"):
        return f"{target!r} is not provisioned in this tenant"
    if target == "mobile":
        return None if has_mobile else "\"mobile\" but the extension has no mobile number"
    if _NUMBER.match(target):
        return None if allow_outside else f"{target!r}: a DID lands on an extension or group"
    return (f"{target!r} is not a target (ext:<user>, group:<name>, mobile or an outside "
            "number)")


def _check_timeout(report: _Reporter, where: tuple[str, ...], value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TIMEOUT_S:
        report(where, f"{where[-1]}: whole seconds between 1 and {MAX_TIMEOUT_S}, got {value!r}")


def _check_bool(report: _Reporter, where: tuple[str, ...], value: Any) -> None:
    if value is not None and not isinstance(value, bool):
        report(where, f"{where[-1]}: true or false, got {value!r}")


def _unknown_keys(report: _Reporter, where: tuple[str, ...], spec: dict[str, Any],
                  known: set[str]) -> None:
    for key in sorted(set(spec) - known):
        report((*where, key), f"unknown key {key!r} (known: {', '.join(sorted(known))})")


def _table(report: _Reporter, where: tuple[str, ...], value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        report(where, f"{where[-1]} must be a table")
        return {}
    return value


def _check_unique_domains(report: _Reporter, tenants: dict[str, Any]) -> None:
    seen: dict[str, str] = {}
    for name, spec in tenants.items():
        domain = spec.get("domain") if isinstance(spec, dict) else None
        if isinstance(domain, str) and domain in seen:
            report(("tenant", name, "domain"), f"domain {domain!r} is already tenant "
                                               f"{seen[domain]!r}'s")
        elif isinstance(domain, str):
            seen[domain] = name


def _check_unique_portals(report: _Reporter, tenants: dict[str, Any]) -> None:
    """One CRM portal per tenant: two tenants on one portal would see each other's calls."""
    seen: dict[str, str] = {}
    for name, spec in tenants.items():
        crm = spec.get("crm") if isinstance(spec, dict) else None
        for kind in CRMS:
            conn = crm.get(kind) if isinstance(crm, dict) else None
            url = conn.get("base_url") if isinstance(conn, dict) else None
            if not isinstance(url, str) or not url:
                continue
            key = url.rstrip("/").lower()
            if key in seen and seen[key] != name:
                report(("tenant", name, "crm", kind, "base_url"),
                       f"crm.{kind}.base_url {url!r} is already tenant {seen[key]!r}'s portal")
            seen.setdefault(key, name)


def _uses_outside_numbers(extensions: dict[str, Any], groups: dict[str, Any]) -> bool:
    specs = [*extensions.values(), *groups.values()]
    targets = [t for s in specs if isinstance(s, dict) for t in (s.get("forward") or {}).values()]
    return any(t == "mobile" or (isinstance(t, str) and _NUMBER.match(t)) for t in targets)


def _is_number(value: Any) -> bool:
    return isinstance(value, str) and bool(_NUMBER.match(value))


def _is_hostport(value: Any, *, port_required: bool = False) -> bool:
    if not isinstance(value, str) or not (m := _HOSTPORT.match(value)):
        return False
    if m.group(2) is None:
        return not port_required
    return 0 < int(m.group(2)) < 65536


# --- compiling: spec -> htable entries (pure) ----------------------------------------------


def ha1(user: str, realm: str, password: str) -> str:
    """Digest HA1 (RFC 2617): what Kamailio checks, so the password is never stored."""
    return hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()  # noqa: S324


def compile_tenant(name: str, spec: Mapping[str, Any],
                   now: datetime | None = None) -> TenantState:
    """The htable entries of one validated tenant (see sip-edge/kamailio.cfg, WITH_PBX);
    schedules become open windows from ``now``'s day on (:mod:`edge.schedules`)."""
    d = spec["domain"]
    strings: dict[str, str] = {}
    ints: dict[str, int] = {f"tenant:{d}": 1, f"tenant:{d}:record": int(spec.get("record", False)),
                            f"tenant:{d}:mgr_timeout": spec.get("manager_timeout",
                                                                DEFAULT_MANAGER_TIMEOUT_S)}
    if spec.get("company_number"):
        strings[f"tenant:{d}:cid"] = spec["company_number"]
    if spec.get("trunk"):
        strings[f"tenant:{d}:trunk"] = spec["trunk"]
    for source in spec.get("trunk_sources") or ([spec["trunk"]] if spec.get("trunk") else []):
        strings[f"trunksrc:{source}"] = d
    creds = {}
    for user, ext in (spec.get("extension") or {}).items():
        creds[f"{user}@{d}"] = ha1(user, d, ext["password"])
        key = f"ext:{d}:{user}"
        ints[key] = 1
        ints[f"{key}:timeout"] = ext.get("no_answer_timeout", DEFAULT_NO_ANSWER_S)
        ints[f"{key}:record"] = int(ext.get("record", False))
        strings |= _forward_entries(key, ext.get("forward"), ext.get("mobile"))
        strings |= {f"white:{d}:{caller_key(n)}": user for n in ext.get("whitelist") or []}
    ints |= {f"block:{d}:{caller_key(n)}": 1 for n in spec.get("blacklist") or []}
    for group, grp in (spec.get("group") or {}).items():
        key = f"group:{d}:{group}"
        strings[f"{key}:mode"] = STRATEGIES[grp.get("strategy", "ring_all")]
        ints[f"{key}:n"] = len(grp["members"])
        strings |= {f"{key}:m{i}": member for i, member in enumerate(grp["members"])}
        ints[f"{key}:timeout"] = grp.get("ring_timeout", DEFAULT_NO_ANSWER_S)
        strings |= _forward_entries(key, grp.get("forward"), None)
        if queue := grp.get("queue"):
            ints[f"{key}:qwait"] = queue["max_wait_s"]
            ints[f"{key}:qlen"] = queue["max_length"]
            strings |= _forward_entries(key, {"q": queue["overflow"]}, None)
            strings[f"{key}:qover"] = strings.pop(f"{key}:fwd:q")
    for user, peers in _pickup_peers(spec.get("group") or {}).items():
        key = f"pickup:{d}:{user}"
        ints[f"{key}:n"] = len(peers)
        strings |= {f"{key}:p{i}": peer for i, peer in enumerate(peers)}
    for code, target in (spec.get("speed_dial") or {}).items():
        strings[f"speed:{d}:{code}"] = f"tel:{target}" if _NUMBER.match(target) else target
    for code, number in (spec.get("mask") or {}).items():
        strings[f"mask:{d}:{code}"] = number
        strings[f"mask:{d}:{code}:shown"] = masked_number(number)
    for number, did in (spec.get("did") or {}).items():
        key = f"did:{number.lstrip('+')}"
        strings[key] = d
        strings[f"{key}:to"] = did["to"]
        ints[f"{key}:record"] = int(did.get("record", False))
        if did.get("schedule"):
            schedule = spec["schedule"][did["schedule"]]
            s_strings, s_ints = _schedule_entries(f"sched:{number.lstrip('+')}", schedule,
                                                  spec["time_zone"], now or datetime.now(UTC))
            strings |= s_strings
            ints |= s_ints
    return TenantState(name, d, creds, strings, ints)


def _schedule_entries(key: str, schedule: Mapping[str, Any], zone: str, now: datetime,
                      ) -> tuple[dict[str, str], dict[str, int]]:
    """``<key>:n`` windows, ``<key>:s<i>``/``:e<i>`` their bounds (epoch s), ``<key>:until``
    the end of the compiled horizon, ``<key>:closed`` the out-of-hours target
    (``refuse:closed`` for a reply)."""
    windows = schedules.open_windows(schedule["hours"], schedule.get("holidays") or (), zone,
                                     now)
    ints = {f"{key}:n": len(windows), f"{key}:until": schedules.horizon_end(zone, now)}
    for i, (start, end) in enumerate(windows):
        ints[f"{key}:s{i}"], ints[f"{key}:e{i}"] = start, end
    closed = schedule["closed"]
    target = "refuse:closed" if closed == "reply" else (
        f"tel:{closed}" if _NUMBER.match(closed) else closed)
    return {f"{key}:closed": target}, ints


def _pickup_peers(groups: Mapping[str, Any]) -> dict[str, list[str]]:
    """Call pickup (*8): whose ringing calls each extension may take, namely those of the
    other members of every group it belongs to (in group order, without repeats)."""
    peers: dict[str, list[str]] = {}
    for grp in groups.values():
        for member in grp["members"]:
            mine = peers.setdefault(member, [])
            mine += [m for m in grp["members"] if m != member and m not in mine]
    return {user: found for user, found in peers.items() if found}


def masked_number(number: str) -> str:
    """What agents and events may see of a client's number: the country digit and the
    last two digits (``+79035550199`` -> ``+7********99``)."""
    plus = "+" if number.startswith("+") else ""
    digits = number.lstrip("+")
    return plus + digits[0] + "*" * (len(digits) - 3) + digits[-2:]


def _forward_entries(key: str, forward: Mapping[str, str] | None,
                     mobile: str | None) -> dict[str, str]:
    entries = {}
    for reason, target in (forward or {}).items():
        if target == "mobile":
            target = f"tel:{mobile}"
        elif _NUMBER.match(target):
            target = f"tel:{target}"
        entries[f"{key}:fwd:{reason}"] = target
    return entries


# --- planning: desired state vs what Kamailio holds (pure) -----------------------------------


def plan(desired: TenantState, current: Iterable[tuple[str, str, str | int]] = (),
         previous: TenantState | None = None) -> list[RpcCall]:
    """RPC calls that make Kamailio hold ``desired``: sets first, then stale deletions.

    ``current`` is what Kamailio holds now ((table, key, value)), ``previous`` the last
    applied state of the tenant; keys of either that belong to the tenant and are not
    desired any more are deleted, after the new values are in place, so a call arriving
    mid-update never finds a tenant half-empty.
    """
    calls = [_set_call(table, key, value) for table, key, value in desired.entries()]
    wanted = {(table, key) for table, key, _ in desired.entries()}
    owned = {(t, k) for t, k, v in current if _owned_by(t, k, v, desired.domain, current)}
    if previous is not None:
        owned |= {(t, k) for t, k, _ in previous.entries()}
    for table, key in sorted(owned - wanted):
        calls.append(RpcCall("htable.delete", (table, key)))
    return calls


def _set_call(table: str, key: str, value: str | int) -> RpcCall:
    method = "htable.seti" if isinstance(value, int) else "htable.sets"
    return RpcCall(method, (table, key, value))


def _owned_by(table: str, key: str, value: str | int, domain: str,
              current: Iterable[tuple[str, str, str | int]]) -> bool:
    """Does this htable entry belong to the tenant of ``domain``?"""
    if table == CREDS_TABLE:
        return key.endswith(f"@{domain}")
    kind, _, rest = key.partition(":")
    if kind in ("tenant", "ext", "group", "speed", "mask", "pickup", "white", "block"):
        return rest == domain or rest.startswith(f"{domain}:")
    if kind == "trunksrc":
        return value == domain
    if kind in ("did", "sched"):
        number = rest.split(":")[0]
        return any(t == PBX_TABLE and k == f"did:{number}" and v == domain
                   for t, k, v in current)
    return False


# --- I/O edges: Kamailio JSON-RPC and the Kafka topic ------------------------------------------


Rpc = Callable[..., Any]


def apply(settings: Settings, path: Path, *, publish: bool = True,
          rpc: Rpc | None = None) -> dict[str, TenantState]:
    """Validate ``path`` and make the running Kamailio serve it, without a restart.

    Then the applied states go to the provisioning topic (``publish=False`` skips it).
    """
    states = load(path)
    apply_states(settings, states.values(), rpc=rpc)
    if publish:
        publish_states(settings, states.values())
    return states


def apply_states(settings: Settings, states: Iterable[TenantState],
                 rpc: Rpc | None = None) -> int:
    """Send every tenant's plan to Kamailio; returns the number of RPC calls made."""
    call = rpc or (lambda method, *params: kamailio_rpc(settings, method, *params))
    current = list(_dump(call, CREDS_TABLE)) + list(_dump(call, PBX_TABLE))
    count = 0
    for state in states:
        for step in plan(state, current):
            call(step.method, *step.params)
            count += 1
    return count


def restore(settings: Settings, *, rpc: Rpc | None = None,
            reader: Callable[[Settings], dict[str, TenantState]] | None = None) -> int:
    """Re-apply the last recorded state of every tenant (after a Kamailio restart)."""
    states = (reader or read_states)(settings)
    return apply_states(settings, states.values(), rpc=rpc)


def _dump(call: Rpc, table: str) -> Iterable[tuple[str, str, str | int]]:
    """(table, key, value) of every entry of an htable, from ``htable.dump``."""
    result = call("htable.dump", table)
    for slot in result or []:
        for entry in slot.get("slot", []) if isinstance(slot, dict) else []:
            yield table, entry["name"], entry["value"]


def _topic(settings: Settings) -> str:
    return str(getattr(settings, "topic_provisioning", PROVISIONING_TOPIC))


def publish_states(settings: Settings, states: Iterable[TenantState]) -> None:
    """Record applied states in the compacted topic (key = tenant, last one wins)."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        for state in states:
            producer.send(_topic(settings), key=state.tenant.encode(), value=state.to_json())
        producer.flush()
    finally:
        producer.close()


def read_states(settings: Settings, timeout_s: float = 15.0) -> dict[str, TenantState]:
    """The last recorded state per tenant: the topic read from the start up to its end
    offsets (as they were when the read began), last value per key wins."""
    from kafka import KafkaConsumer, TopicPartition

    topic = _topic(settings)
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                             enable_auto_commit=False, client_id="tawag-provision")
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        if not partitions:
            return {}
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        records: list[tuple[bytes | None, bytes | None]] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: could not read up to the end offsets in "
                                   f"{timeout_s:.0f} s")
            for batch in consumer.poll(timeout_ms=200).values():
                records += [(m.key, m.value) for m in batch]
        return latest_states(records)
    finally:
        consumer.close()


def provision_started_edge(settings: Settings) -> str:
    """What the supervisor runs once a new Kamailio answers: the provisioning file when it
    exists (applied and recorded in the topic), else the last state from the topic."""
    path = Path(settings.provisioning_file)
    if path.exists():
        apply(settings, path)
        return f"applied {path}"
    return f"restored {restore(settings)} entries from {_topic(settings)} ({path} is absent)"


def restore_restarted_edge(settings: Settings) -> str:
    """What the supervisor runs after restarting Kamailio: the last applied state from the
    topic (which holds live ``tawag provision`` changes too); the file only when the
    topic has nothing yet."""
    states = read_states(settings)
    if states:
        calls = apply_states(settings, states.values())
        return f"restored {calls} entries from {_topic(settings)}"
    return provision_started_edge(settings)


def latest_states(records: Iterable[tuple[bytes | None, bytes | None]]) -> dict[str, TenantState]:
    """Fold topic records in order: the last value per key wins, a tombstone removes it."""
    states: dict[str, TenantState] = {}
    for key, value in records:
        if key is None:
            continue
        if value is None:
            states.pop(key.decode(), None)
        else:
            states[key.decode()] = TenantState.from_json(value)
    return states
