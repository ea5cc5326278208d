"""Starts, watches and stops the local stack, each process by its PID.

Order matters: Kafka first (everything produces to it), rtpengine before Kamailio (the
rtpengine module disables a proxy that does not answer its first ping), the ingest bridge
before any traffic (evapi does not buffer), then the stream processors, the warehouse
and the dashboard. Each step waits on a real readiness check, never on a fixed sleep.

Once up, :meth:`Supervisor.watch` keeps it up: a component that exits on its own is started
again after a backoff (:mod:`tawag.restart_policy`), with its ``after_restart`` hook, while
every other component keeps running; one that keeps crashing is reported and left down.
What happened is kept in ``run/supervisor/state.json`` (replaced atomically) for
``tawag status`` in another terminal.

A PID file holds ``<pid> <start time>``; the start time (from /proc) makes sure a
recycled PID never gets a signal meant for a process of ours.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from core.settings import REPO_ROOT, Settings, to_environ
from core.tenant_crm import tenant_crms
from tawag.restart_policy import Backoff, RestartPolicy

__all__ = ["Component", "StackError", "Supervisor", "components"]

STOP_TIMEOUT_S = 15.0
POLL_S = 0.1


class StackError(RuntimeError):
    """A problem an operator can act on; its message is one line that names the thing."""


@dataclass(frozen=True)
class Component:
    name: str
    command: Callable[[Settings], list[str]]
    ready: Callable[[Settings], bool]
    ports: tuple[tuple[int, str], ...] = ()
    programs: tuple[str, ...] = ()
    prepare: Callable[[Settings], None] | None = None
    after_ready: Callable[[Settings], object] | None = None
    after_restart: Callable[[Settings], object] | None = None
    """Run instead of ``after_ready`` when it is started again (:meth:`Supervisor.restart`,
    or :meth:`Supervisor.watch` after it exited on its own)."""
    before_stop: Callable[[Settings], object] | None = None
    """Run while it still runs, just before it is sent SIGTERM."""
    ready_timeout_s: float = 60.0
    optional: bool = False
    """Optional components (the demo traffic) are left out by ``--no-demo``."""


def _python(*args: str) -> Callable[[Settings], list[str]]:
    return lambda s: [sys.executable, "-m", "tawag", *args]


def _http_ok(url: str) -> bool:
    import httpx

    from core.tls import default_context

    try:
        return httpx.get(url, timeout=1.0, verify=default_context()).status_code == 200
    except httpx.HTTPError:
        return False


def components(settings: Settings) -> list[Component]:
    """The stack in start order."""
    from edge import control as edge
    from edge import provision
    from edge.live import ready_file as live_ready
    from ingest.service import ready_file
    from tawag import kafka
    from tawag.readiness import ConsumerGroupReady

    s = settings
    streams_ready = ConsumerGroupReady("tawag-streams")
    return [
        Component("kafka", kafka.kafka_command, kafka.kafka_ready,
                  ports=((int(s.kafka_bootstrap.rsplit(":", 1)[1]), "tcp"),
                         (s.kafka_controller_port, "tcp")),
                  programs=("java",), prepare=_prepare_kafka, after_ready=kafka.ensure_topics),
        Component("rtpengine", edge.rtpengine_command, edge.rtpengine_ready,
                  ports=((s.rtpengine_ng_port, "udp"), (s.rtpengine_cli_port, "tcp"),
                         (s.rtpengine_http_port, "tcp")),
                  programs=("rtpengine",), prepare=edge.prepare_dirs,
                  before_stop=edge.end_media_sessions),
        Component("kamailio", edge.kamailio_command, edge.kamailio_ready,
                  ports=((s.sip_port, "udp"), (s.sip_port, "tcp"),
                         (s.kamailio_http_port, "tcp"), (s.evapi_port, "tcp")),
                  programs=("kamailio",), prepare=edge.prepare_dirs,
                  # a new Kamailio knows no extensions: provision it before any traffic
                  after_ready=provision.provision_started_edge,
                  after_restart=provision.restore_restarted_edge),
        Component("ingest", _python("ingest"), lambda st: ready_file(st).exists(),
                  ports=((s.ingest_metrics_port, "tcp"),)),
        Component("streams", _python("streams"), streams_ready,
                  ports=((s.streams_metrics_port, "tcp"),),
                  prepare=streams_ready.prepare, ready_timeout_s=90.0),
        # the streams' routing facts -> the edge's htable "live" (edge.live)
        Component("live", _python("live"), lambda st: live_ready(st).exists()),
        Component("warehouse", _python("warehouse"),
                  lambda st: _http_ok(st.warehouse_url + "ping"),
                  ports=((s.warehouse_http_port, "tcp"), (s.warehouse_metrics_port, "tcp"))),
        Component("dashboard", _dashboard_command,
                  lambda st: _http_ok(f"http://127.0.0.1:{st.dashboard_port}/_stcore/health"),
                  ports=((s.dashboard_port, "tcp"),)),
        # the public REST API and the webhook deliveries (api/)
        Component("api", _python("api"),
                  lambda st: _http_ok(f"http://{st.api_host}:{st.api_port}/health"),
                  ports=((s.api_port, "tcp"),)),
        *_connectors(s),
        Component("demo", _python("demo"), lambda st: True, programs=("sipp",),
                  optional=True),
    ]


def _connectors(s: Settings) -> list[Component]:
    """The CRM sync worker, only when a CRM is enabled (``TAWAG_CRM_ENABLED``, or a
    tenant's ``[tenant.<name>.crm]`` in the provisioning file).

    Ready when its HTTP server says the Kafka consumer holds its partitions; it serves
    the signed recording links and Bitrix24's click-to-call events on that port.
    """
    if not (s.crm_enabled or tenant_crms(s.provisioning_file)):
        return []
    url = f"http://{s.recordings_http_host}:{s.recordings_http_port}/health"
    return [Component("connectors", _python("connectors"), lambda st: _http_ok(url),
                      ports=((s.recordings_http_port, "tcp"), (s.connectors_metrics_port, "tcp")),
                      ready_timeout_s=90.0)]


def _prepare_kafka(settings: Settings) -> None:
    from tawag import kafka

    if kafka.missing_jars(settings):
        raise StackError(f"Kafka {settings.kafka_version} jars are missing in "
                         f"{settings.kafka_libs} (run `make install`)")
    kafka.prepare_storage(settings)


def _dashboard_command(settings: Settings) -> list[str]:
    return [sys.executable, "-m", "streamlit", "run",
            str(REPO_ROOT / "dashboards" / "streamlit_app.py"),
            "--server.address", "127.0.0.1", "--server.port", str(settings.dashboard_port),
            "--server.headless", "true", "--browser.gatherUsageStats", "false"]


# --- PID files ---------------------------------------------------------------------------

def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22: start time in clock ticks


@dataclass
class Running:
    name: str
    pid: int
    started: str
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            return False
        return _start_time(self.pid) == self.started


def _pid_file(settings: Settings, name: str) -> Path:
    # Apart from the daemons' own PID files (kamailio -P writes run_dir/kamailio.pid).
    return settings.run_dir / "supervisor" / f"{name}.pid"


def read_pid(settings: Settings, name: str) -> Running | None:
    try:
        pid, started = _pid_file(settings, name).read_text().split()
    except (OSError, ValueError):
        return None
    running = Running(name, int(pid), started)
    return running if running.alive() else None


# --- pre-flight --------------------------------------------------------------------------

def port_free(host: str, port: int, proto: str) -> bool:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def preflight(settings: Settings, wanted: list[Component]) -> None:
    """Refuse to start with one clear line: a missing program, a taken port, a live stack."""
    live = [c.name for c in wanted if read_pid(settings, c.name)]
    if live:
        raise StackError(f"already running: {', '.join(live)} (see `tawag status`, "
                         "stop with `tawag down`)")
    for comp in wanted:
        for program in comp.programs:
            if shutil.which(program) is None:
                raise StackError(f"missing program '{program}' needed by {comp.name} "
                                 "(run `make install`)")
        for port, proto in comp.ports:
            if not port_free("127.0.0.1", port, proto):
                raise StackError(f"port {port}/{proto} is already in use "
                                 f"(needed by {comp.name})")


# --- the supervisor ------------------------------------------------------------------------

@dataclass
class Record:
    """What ``tawag status`` shows of one component beyond its PID file."""

    state: str = "starting"
    """starting | up | restarting (waiting out its backoff) | failed (given up on)."""
    restarts: int = 0
    last_exit: str | None = None
    last_exit_at: float | None = None
    last_exit_code: int | None = None
    """Popen's return code of the last exit: the status, or -N when killed by signal N."""
    next_start_at: float | None = None


@dataclass
class _Starting:
    """A restarted component that :meth:`Supervisor.watch` waits on without blocking."""

    comp: Component
    running: Running
    t0: float
    deadline: float


class Supervisor:
    """Usage::

        sup = Supervisor(settings)
        sup.start(demo=False)     # raises StackError with one line on failure
        sup.watch(stop_event.is_set)   # restarts what dies, until stop() is true
        sup.stop()
    """

    def __init__(self, settings: Settings, *, stack: list[Component] | None = None,
                 out=sys.stdout, policy: RestartPolicy | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.stack = components(settings) if stack is None else stack
        self.out = out
        self.policy = policy or RestartPolicy()
        self.clock = clock
        self.running: list[Running] = []
        self.records: dict[str, Record] = {}
        self._backoffs: dict[str, Backoff] = {}
        self._due: dict[str, float] = {}
        self._starting: dict[str, _Starting] = {}

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def shout(self, line: str) -> None:
        """A line the operator must not miss: on stderr (and in ``out`` if that is not the
        terminal's stdout, e.g. a test's buffer)."""
        if self.out is not sys.stdout:
            self.say(line)
        print(line, file=sys.stderr, flush=True)

    def start(self, *, demo: bool = True) -> None:
        wanted = [c for c in self.stack if demo or not c.optional]
        for d in (self.settings.run_dir / "supervisor", self.settings.log_dir):
            d.mkdir(parents=True, exist_ok=True)
        preflight(self.settings, wanted)
        try:
            for comp in wanted:
                self.records[comp.name] = Record()
                self._backoffs[comp.name] = Backoff(self.policy, clock=self.clock)
                self._write_state()
                self._start_one(comp)
                self.records[comp.name].state = "up"
                self._backoffs[comp.name].started()
                self._write_state()
        except BaseException:
            self.stop()
            raise

    def _start_one(self, comp: Component, *, restarting: bool = False) -> None:
        t0 = time.monotonic()
        running = self._spawn(comp)
        self._wait_ready(comp, running, self.settings.log_dir / f"{comp.name}.log")
        self._set_up(comp, running, restarting=restarting, t0=t0)

    def _spawn(self, comp: Component) -> Running:
        if comp.prepare:
            comp.prepare(self.settings)
        log_path = self.settings.log_dir / f"{comp.name}.log"
        env = os.environ | to_environ(self.settings) | {"PYTHONUNBUFFERED": "1"}
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(comp.command(self.settings), stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, env=env,
                                    cwd=REPO_ROOT, start_new_session=True)
        running = Running(comp.name, proc.pid, _start_time(proc.pid) or "?", proc)
        _pid_file(self.settings, comp.name).write_text(f"{proc.pid} {running.started}\n")
        self.running.append(running)
        return running

    def _set_up(self, comp: Component, running: Running, *, restarting: bool,
                t0: float) -> None:
        """Its hook, once it is ready; then the 'up' line."""
        hook = comp.after_restart if restarting and comp.after_restart else comp.after_ready
        try:
            note = hook(self.settings) if hook else None
        except StackError:
            raise
        except Exception as exc:  # an operator's problem (a bad file, Kafka down): one line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StackError(f"{comp.name} started but setting it up failed: {first}") from exc
        extra = f"  ({note})" if isinstance(note, str) else ""
        self.say(f"  {comp.name:<10} up   pid {running.pid:<7} "
                 f"{time.monotonic() - t0:5.1f} s{extra}")

    def _wait_ready(self, comp: Component, running: Running, log_path: Path) -> None:
        deadline = time.monotonic() + comp.ready_timeout_s
        while not comp.ready(self.settings):
            if not running.alive():
                raise StackError(f"{comp.name} exited during start-up; see {log_path}")
            if time.monotonic() > deadline:
                raise StackError(f"{comp.name} not ready after {comp.ready_timeout_s:.0f} s; "
                                 f"see {log_path}")
            time.sleep(POLL_S)

    def restart(self, name: str, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop one component (gracefully, or e.g. SIGKILL to simulate a crash), start it again."""
        comp = next(c for c in self.stack if c.name == name)
        running = next(r for r in self.running if r.name == name)
        if sig != signal.SIGTERM:
            _signal_group(running.pid, sig)
        terminate(self.settings, running, comp.before_stop)
        self.running.remove(running)
        self._start_one(comp, restarting=True)

    def watch(self, stop: Callable[[], bool]) -> None:
        """Until ``stop()`` is true: restart each component that exits on its own (after its
        backoff), give up on one that keeps crashing; the others run on untouched. Never
        blocks on one component: a restarted one is waited for tick by tick, so another
        that dies meanwhile is seen at once."""
        while not stop():
            for running in list(self.running):
                starting = self._starting.get(running.name)
                if (code := _exit_status(running)) is not None:
                    self.records[running.name].last_exit_code = code
                    self._exited(running, describe_exit(code), starting=starting is not None)
                elif starting is not None:
                    self._check_started(starting)
            now = self.clock()
            for name, due in sorted(self._due.items(), key=lambda item: item[1]):
                if now >= due and not stop():
                    self._begin_restart(name)
            time.sleep(POLL_S)

    def _exited(self, running: Running, how: str, *, starting: bool = False) -> None:
        """``running`` exited on its own (reaped): clear its remains, schedule or give up."""
        self.running.remove(running)
        self._starting.pop(running.name, None)
        _pid_file(self.settings, running.name).unlink(missing_ok=True)
        when = " during start-up" if starting else ""
        self._failed(running.name, how, f"{running.name} (pid {running.pid}) exited{when}: {how}")

    def _failed(self, name: str, how: str, headline: str) -> None:
        record = self.records[name]
        record.last_exit, record.last_exit_at = how, time.time()
        backoff = self._backoffs[name]
        delay = backoff.exited()
        log_path = self.settings.log_dir / f"{name}.log"
        if delay is None:
            record.state, record.next_start_at = "failed", None
            self.shout(f"!! {headline}; it exited {backoff.recent_exits} times within "
                       f"{self.policy.window_s:.0f} s: giving up, it stays DOWN while the rest "
                       f"runs on. See {log_path}; fix it and run `tawag up` again.")
        else:
            record.state, record.next_start_at = "restarting", time.time() + delay
            self._due[name] = self.clock() + delay
            self.say(f"  {headline}; restarting in {delay:g} s (see {log_path})")
        self._write_state()

    def _begin_restart(self, name: str) -> None:
        del self._due[name]
        comp = next(c for c in self.stack if c.name == name)
        record = self.records[name]
        record.restarts += 1
        record.state, record.next_start_at = "starting", None
        self._write_state()
        t0 = time.monotonic()
        try:
            running = self._spawn(comp)
        except Exception as exc:  # its prepare step failed, or the program is gone
            self._restart_failed(name, exc)
            return
        self._starting[name] = _Starting(comp, running, t0, t0 + comp.ready_timeout_s)

    def _check_started(self, starting: _Starting) -> None:
        comp, name = starting.comp, starting.comp.name
        try:
            if not comp.ready(self.settings):
                if time.monotonic() > starting.deadline:
                    raise StackError(f"{name} not ready after {comp.ready_timeout_s:.0f} s")
                return
            self._set_up(comp, starting.running, restarting=True, t0=starting.t0)
        except Exception as exc:  # not ready in time, its hook failed: one more exit
            self._restart_failed(name, exc)
            return
        del self._starting[name]
        self.records[name].state = "up"
        self._backoffs[name].started()
        self._write_state()

    def _restart_failed(self, name: str, exc: Exception) -> None:
        self._starting.pop(name, None)
        self._abandon_start(name)
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        self._failed(name, f"restart failed: {why}", f"restarting {name} failed: {why}")

    def _abandon_start(self, name: str) -> None:
        comp = next(c for c in self.stack if c.name == name)
        for running in [r for r in self.running if r.name == name]:
            terminate(self.settings, running, comp.before_stop)
            self.running.remove(running)

    def stop(self) -> None:
        """Stop what this supervisor started, newest first."""
        hooks = {c.name: c.before_stop for c in self.stack}
        for running in reversed(self.running):
            terminate(self.settings, running, hooks.get(running.name))
            self.say(f"  {running.name:<10} stopped")
        self.running.clear()
        self._due.clear()
        self._starting.clear()
        _state_file(self.settings).unlink(missing_ok=True)

    def _write_state(self) -> None:
        """Replace the state file in one step, so a reader never sees half of it."""
        path = _state_file(self.settings)
        body = {"supervisor": {"pid": os.getpid(), "started": _start_time(os.getpid())},
                "components": {name: vars(record) for name, record in self.records.items()}}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(body, indent=1) + "\n")
        os.replace(tmp, path)


def _state_file(settings: Settings) -> Path:
    return settings.run_dir / "supervisor" / "state.json"


def read_state(settings: Settings) -> dict[str, dict]:
    """The records of the live ``tawag up``, by component; empty when none runs (a state
    file left by a supervisor that is gone is not believed)."""
    try:
        body = json.loads(_state_file(settings).read_text())
        owner = body["supervisor"]
        if _start_time(int(owner["pid"])) != owner["started"]:
            return {}
        return dict(body["components"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def describe_exit(returncode: int) -> str:
    """``killed by SIGKILL`` / ``exit status 3``, from a Popen return code."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


def _exit_status(running: Running) -> int | None:
    """None while ``running`` (a child of ours) runs; once it exited: its return code,
    after killing what is left of its process group (Kamailio's children outlive a killed
    main process and hold its ports). The group is signalled while the leader is still an
    unreaped zombie, so its PID cannot have been given to anyone else."""
    proc = running.proc
    assert proc is not None, "only the processes this supervisor started are watched"
    if proc.returncode is None:
        try:
            if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
                return None
        except ChildProcessError:  # reaped already
            pass
        else:
            _signal_group(proc.pid, signal.SIGKILL)
    code = proc.wait()
    _wait_group_gone(proc.pid)
    return code


def _wait_group_gone(pgid: int, timeout: float = 5.0) -> None:
    """Until no live process is left in group ``pgid`` (zombies hold no ports)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _group_members(pgid):
        time.sleep(POLL_S)


def _group_members(pgid: int) -> list[int]:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:  # state, ppid, pgrp
            members.append(int(stat.parent.name))
    return members


def uptime_s(running: Running) -> float | None:
    """Seconds since ``running`` started, from /proc (no state file needed)."""
    try:
        since_boot = float(Path("/proc/uptime").read_text().split()[0])
        return since_boot - int(running.started) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None


def terminate(settings: Settings, running: Running,
              before_stop: Callable[[Settings], object] | None = None) -> None:
    """SIGTERM the process group led by ``running.pid`` (after ``before_stop``, while it
    still runs); SIGKILL it if it lingers."""
    if running.alive():
        if before_stop is not None:
            try:
                before_stop(settings)
            except Exception as exc:  # said, and the stop goes on: a stack must stop
                print(f"  {running.name}: stopping without its clean-up step: {exc}",
                      file=sys.stderr, flush=True)
        _signal_group(running.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while running.alive() and time.monotonic() < deadline:
            if running.proc is not None:
                running.proc.poll()
            time.sleep(POLL_S)
        if running.alive():
            _signal_group(running.pid, signal.SIGKILL)
    if running.proc is not None:
        running.proc.wait()
    if _group_members(running.pid):  # children left by a leader that died on its own
        _signal_group(running.pid, signal.SIGKILL)
        _wait_group_gone(running.pid)
    _pid_file(settings, running.name).unlink(missing_ok=True)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)  # each component leads its own session (start_new_session)


def stop_recorded(settings: Settings) -> list[str]:
    """``tawag down``: stop every component that has a live PID file, newest first."""
    stopped = []
    for comp in reversed(components(settings)):
        running = read_pid(settings, comp.name)
        if running:
            terminate(settings, running, comp.before_stop)
            stopped.append(comp.name)
        else:
            _pid_file(settings, comp.name).unlink(missing_ok=True)
    return stopped


@dataclass(frozen=True)
class Status:
    name: str
    up: bool
    """Running and ready (not still starting)."""
    pid: int | None
    uptime_s: float | None
    state: str
    """up | down, or what the live supervisor says: restarting, failed, starting."""
    restarts: int | None
    last_exit: str | None
    last_exit_at: float | None
    ports: str


def status(settings: Settings) -> list[Status]:
    """Each component: alive by its PID file; restarts and last exit from the state file
    of the ``tawag up`` that runs it."""
    records = read_state(settings)
    rows = []
    for comp in components(settings):
        running = read_pid(settings, comp.name)
        record = records.get(comp.name, {})
        state = "up" if running else "down"
        if record.get("state") == "starting" and running:
            state = "starting"  # spawned again, not ready yet: not serving
        elif record.get("state") in ("restarting", "failed") and not running:
            state = record["state"]
        rows.append(Status(
            comp.name, state == "up", running.pid if running else None,
            uptime_s(running) if running else None, state, record.get("restarts"),
            record.get("last_exit"), record.get("last_exit_at"),
            ", ".join(f"{p}/{proto}" for p, proto in comp.ports) or "-"))
    return rows


# --- metrics ---------------------------------------------------------------------------------

SUPERVISOR_FAMILIES = [
    ("tawag_component_up", "1 while the component runs and is ready, else 0", "gauge",
     ["component"]),
    ("tawag_component_given_up", "1 once the supervisor gave up on the component (it "
     "crashed too often; it stays down until `tawag up` again)", "gauge", ["component"]),
    ("tawag_component_restarts_total", "Restarts of the component by the supervisor",
     "counter", ["component"]),
    ("tawag_component_last_exit_code", "Return code of the component's last exit (-N: "
     "killed by signal N); absent before its first exit", "gauge", ["component"]),
]


def supervisor_samples(sup: Supervisor) -> dict[str, list[tuple[tuple[str], float]]]:
    """The families of :data:`SUPERVISOR_FAMILIES` from ``sup``'s records, now."""
    out: dict[str, list[tuple[tuple[str], float]]] = {f[0]: [] for f in SUPERVISOR_FAMILIES}
    for name, record in list(sup.records.items()):
        out["tawag_component_up"].append(((name,), 1.0 if record.state == "up" else 0.0))
        out["tawag_component_given_up"].append(((name,), 1.0 if record.state == "failed"
                                                 else 0.0))
        out["tawag_component_restarts_total"].append(((name,), record.restarts))
        if record.last_exit_code is not None:
            out["tawag_component_last_exit_code"].append(((name,), record.last_exit_code))
    return out


def serve_supervisor_metrics(sup: Supervisor, registry=None):
    """Serve the supervisor's records on ``supervisor_metrics_port`` (``tawag up``); returns
    the :class:`core.metrics.MetricsServer` (None when the port cannot be bound)."""
    from prometheus_client import CollectorRegistry

    from core.metrics import CallbackCollector, serve

    registry = registry if registry is not None else CollectorRegistry()
    registry.register(CallbackCollector(SUPERVISOR_FAMILIES, lambda: supervisor_samples(sup)))
    return serve(sup.settings.metrics_host, sup.settings.supervisor_metrics_port,
                 "supervisor", registry)
