"""The supervisor with real child processes (plain Python sleepers), no stack needed:
start, stop, pre-flight, and what ``tawag up`` does when a component exits on its own."""

import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import pytest

from core.settings import load
from tawag.restart_policy import RestartPolicy
from tawag.supervisor import (
    Component,
    StackError,
    Supervisor,
    preflight,
    read_pid,
    read_state,
    status,
    stop_recorded,
)


@pytest.fixture
def settings(tmp_path):
    return load(data_dir=tmp_path)


def sleeper(marker):
    """A child that writes a marker when 'ready' and then runs until signalled."""
    code = f"import pathlib,time; pathlib.Path({str(marker)!r}).touch(); time.sleep(600)"
    return lambda s: [sys.executable, "-c", code]


def test_missing_program_is_one_clear_line(settings):
    comp = Component("edge", lambda s: [], lambda s: True, programs=("no-such-binary-xyz",))
    with pytest.raises(StackError, match=r"^missing program 'no-such-binary-xyz' needed by edge"):
        preflight(settings, [comp])


def test_taken_port_is_named(settings):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        comp = Component("kafka", lambda s: [], lambda s: True, ports=((port, "tcp"),))
        expected = rf"^port {port}/tcp is already in use \(needed by kafka\)"
        with pytest.raises(StackError, match=expected):
            preflight(settings, [comp])


def test_start_waits_for_readiness_and_stop_kills_by_pid(settings, tmp_path):
    marker = tmp_path / "ready"
    comp = Component("sleeper", sleeper(marker), lambda s: marker.exists())
    sup = Supervisor(settings, stack=[comp], out=io.StringIO())
    sup.start()
    running = read_pid(settings, "sleeper")
    assert running is not None and running.alive()
    with pytest.raises(StackError, match="already running: sleeper"):
        Supervisor(settings, stack=[comp]).start()
    sup.stop()
    assert not running.alive()
    assert not (settings.run_dir / "supervisor" / "sleeper.pid").exists()


def test_a_component_that_dies_during_start_up_is_reported(settings):
    comp = Component("crasher", lambda s: [sys.executable, "-c", "raise SystemExit(3)"],
                     lambda s: False)
    sup = Supervisor(settings, stack=[comp], out=io.StringIO())
    with pytest.raises(StackError, match=r"crasher exited during start-up; see .*crasher.log"):
        sup.start()
    assert read_pid(settings, "crasher") is None


def test_a_recycled_pid_is_never_signalled(settings):
    """A PID file whose start time does not match the live process is stale."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        (settings.run_dir / "supervisor").mkdir(parents=True)
        (settings.run_dir / "supervisor" / "kafka.pid").write_text(f"{other.pid} 1\n")
        assert read_pid(settings, "kafka") is None
        stop_recorded(settings)
        assert other.poll() is None, "a process that is not ours was killed"
    finally:
        other.kill()
        other.wait()


def test_cli_reports_a_taken_port_without_traceback(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"TAWAG_DATA_DIR": str(tmp_path), "TAWAG_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}",
               "PATH": "/usr/bin:/bin"}
        proc = subprocess.run([sys.executable, "-m", "tawag", "up", "--no-demo"], env=env,
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"tawag: port {port}/tcp is already in use (needed by kafka)"]
    assert "Traceback" not in proc.stdout + proc.stderr


def test_cli_sql_without_a_warehouse_says_so(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"TAWAG_DATA_DIR": str(tmp_path), "TAWAG_WAREHOUSE_HTTP_PORT": str(port)}
    proc = subprocess.run([sys.executable, "-m", "tawag", "sql", "SELECT 1"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.startswith("tawag: the warehouse is not answering at")


# --- supervision: what `tawag up` does when a component exits on its own -----------------

FAST = RestartPolicy(first_delay_s=0.05, max_delay_s=0.2, stable_s=60, max_crashes=5,
                     window_s=60)


def wait_for(what, condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)  # polling interval, not a wait for an event
    return value


def crashes_once_started(marker):
    """Runs the first time; every later start exits at once with status 3."""
    code = (f"import pathlib,sys,time; m = pathlib.Path({str(marker)!r})\n"
            "if m.exists(): sys.exit(3)\n"
            "m.touch(); time.sleep(600)")
    return lambda s: [sys.executable, "-c", code]


@contextmanager
def watching(sup):
    """``sup.watch`` in a thread, as ``tawag up`` runs it; stopped like Ctrl-C does."""
    stop = threading.Event()
    thread = threading.Thread(target=sup.watch, args=(stop.is_set,), daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(10)
        assert not thread.is_alive(), "watch() did not return after Ctrl-C"
        sup.stop()


def new_pid(settings, name, old):
    running = read_pid(settings, name)
    return running.pid if running and running.pid != old else None


def test_a_killed_component_is_restarted_with_its_hook_and_the_others_run_on(
        settings, tmp_path):
    restored = []
    edge = Component("kamailio", sleeper(tmp_path / "edge"), lambda s: True)
    streams = Component("streams", sleeper(tmp_path / "streams"), lambda s: True,
                        after_ready=lambda s: "first start",
                        after_restart=lambda s: restored.append(True) or "restored")
    out = io.StringIO()
    sup = Supervisor(settings, stack=[edge, streams], out=out, policy=FAST)
    sup.start()
    edge_pid = read_pid(settings, "kamailio").pid
    streams_pid = read_pid(settings, "streams").pid
    with watching(sup):
        os.kill(streams_pid, signal.SIGKILL)
        pid = wait_for("streams back with a new PID",
                       lambda: new_pid(settings, "streams", streams_pid))
        wait_for("streams recorded up", lambda: read_state(settings)["streams"]["state"] == "up")
        assert restored == [True]
        assert read_pid(settings, "kamailio").pid == edge_pid
        record = read_state(settings)["streams"]
        assert record["restarts"] == 1
        assert record["last_exit"] == "killed by SIGKILL"
        assert read_state(settings)["kamailio"]["restarts"] == 0
        rows = {row.name: row for row in status(settings)}
        assert (rows["streams"].up, rows["streams"].pid, rows["streams"].restarts) \
            == (True, pid, 1)
        assert rows["streams"].last_exit == "killed by SIGKILL"
        assert rows["kafka"].state == "down"
        running = [read_pid(settings, "kamailio"), read_pid(settings, "streams")]
    # Ctrl-C: everything stopped by PID, and the state file with it
    assert not any(r.alive() for r in running)
    assert read_state(settings) == {}
    assert f"streams (pid {streams_pid}) exited: killed by SIGKILL; restarting in 0.05 s" \
        in out.getvalue()


def test_a_component_that_keeps_crashing_is_given_up_on_while_the_rest_serves(
        settings, tmp_path, capsys):
    edge = Component("rtpengine", sleeper(tmp_path / "edge"), lambda s: True)
    marker = tmp_path / "crashed"
    crasher = Component("streams", crashes_once_started(marker), lambda s: marker.exists())
    sup = Supervisor(settings, stack=[edge, crasher], out=io.StringIO(), policy=FAST)
    sup.start()
    edge_pid = read_pid(settings, "rtpengine").pid
    first = read_pid(settings, "streams").pid
    with watching(sup) as thread:
        os.kill(first, signal.SIGKILL)
        wait_for("streams given up on",
                 lambda: read_state(settings)["streams"]["state"] == "failed")
        record = read_state(settings)["streams"]
        assert record["restarts"] == 4  # 1 kill + 4 restarts that exited at once = 5 exits
        assert record["last_exit"] == "exit status 3"
        assert read_pid(settings, "streams") is None
        assert read_pid(settings, "rtpengine").pid == edge_pid
        assert thread.is_alive(), "the supervisor must go on watching the others"
        rows = {row.name: row for row in status(settings)}
        assert (rows["streams"].state, rows["streams"].up) == ("failed", False)
        assert rows["rtpengine"].up
    err = capsys.readouterr().err
    assert "streams" in err and "giving up, it stays DOWN" in err


def test_a_restart_that_fails_to_get_ready_counts_as_a_crash(settings, tmp_path):
    """A restarted component whose hook fails is stopped and tried again later."""
    calls = []

    def flaky_hook(s):
        calls.append(True)
        if len(calls) == 1:
            raise RuntimeError("Kafka is not answering")
        return "restored"

    comp = Component("kamailio", sleeper(tmp_path / "k"), lambda s: True,
                     after_restart=flaky_hook)
    sup = Supervisor(settings, stack=[comp], out=io.StringIO(), policy=FAST)
    sup.start()
    first = read_pid(settings, "kamailio").pid
    with watching(sup):
        os.kill(first, signal.SIGKILL)
        wait_for("kamailio restored on the second try", lambda: len(calls) == 2 and read_state(
            settings)["kamailio"]["state"] == "up")
        record = read_state(settings)["kamailio"]
        assert record["restarts"] == 2
        assert record["last_exit"].startswith("restart failed: kamailio started but setting "
                                              "it up failed: Kafka is not answering")


def test_status_cli_shows_restarts_and_last_exit(settings, tmp_path):
    comp = Component("streams", sleeper(tmp_path / "s"), lambda s: True)
    sup = Supervisor(settings, stack=[comp], out=io.StringIO(), policy=FAST)
    sup.start()
    first = read_pid(settings, "streams").pid
    with watching(sup):
        os.kill(first, signal.SIGKILL)
        pid = wait_for("streams back", lambda: new_pid(settings, "streams", first))
        wait_for("streams recorded up", lambda: read_state(settings)["streams"]["state"] == "up")
        proc = subprocess.run([sys.executable, "-m", "tawag", "status"], capture_output=True,
                              text=True, timeout=60,
                              env=os.environ | {"TAWAG_DATA_DIR": str(settings.data_dir)})
    assert proc.returncode == 3, "kafka and the rest are down"
    lines = {line.split()[0]: line for line in proc.stdout.splitlines()}
    assert lines["component"].split()[:5] == ["component", "state", "pid", "uptime", "restarts"]
    streams = lines["streams"].split()
    assert streams[:3] == ["streams", "up", str(pid)]
    assert streams[4] == "1"
    assert "killed by SIGKILL" in lines["streams"]
    assert lines["kafka"].split()[1:3] == ["down", "-"]


def test_a_slow_restart_does_not_hold_up_the_restart_of_another(settings, tmp_path):
    """streams waits a minute for its consumer group after a kill -9; a Kamailio that dies
    meanwhile must not wait for that."""
    slow_ready = threading.Event()
    slow_ready.set()
    streams = Component("streams", sleeper(tmp_path / "s"), lambda s: slow_ready.is_set(),
                        ready_timeout_s=600)
    edge = Component("kamailio", sleeper(tmp_path / "k"), lambda s: True)
    sup = Supervisor(settings, stack=[edge, streams], out=io.StringIO(), policy=FAST)
    sup.start()
    streams_pid = read_pid(settings, "streams").pid
    edge_pid = read_pid(settings, "kamailio").pid
    with watching(sup):
        slow_ready.clear()
        os.kill(streams_pid, signal.SIGKILL)
        wait_for("streams restarted, waiting to be ready",
                 lambda: read_state(settings)["streams"]["restarts"] == 1
                 and new_pid(settings, "streams", streams_pid))
        os.kill(edge_pid, signal.SIGKILL)
        wait_for("kamailio up again while streams is still starting",
                 lambda: read_state(settings)["kamailio"]["state"] == "up"
                 and new_pid(settings, "kamailio", edge_pid))
        assert read_state(settings)["streams"]["state"] == "starting"
        rows = {row.name: row for row in status(settings)}
        assert (rows["streams"].state, rows["streams"].up) == ("starting", False)
        assert (rows["kamailio"].state, rows["kamailio"].up) == ("up", True)
        slow_ready.set()
        wait_for("streams up", lambda: read_state(settings)["streams"]["state"] == "up")


def test_ctrl_c_while_a_restart_waits_stops_it_too(settings, tmp_path):
    comp = Component("streams", sleeper(tmp_path / "s"), lambda s: not restarting.is_set(),
                     ready_timeout_s=600)
    restarting = threading.Event()
    sup = Supervisor(settings, stack=[comp], out=io.StringIO(), policy=FAST)
    sup.start()
    first = read_pid(settings, "streams").pid
    with watching(sup):
        restarting.set()
        os.kill(first, signal.SIGKILL)
        second = read_pid(settings, "streams") if wait_for(
            "the restarted one", lambda: new_pid(settings, "streams", first)) else None
    assert second is not None and not second.alive()
    assert read_pid(settings, "streams") is None
