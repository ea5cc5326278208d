"""The supervisor with real child processes (plain Python sleepers), no stack needed."""

import io
import socket
import subprocess
import sys

import pytest

from tawag.settings import load
from tawag.supervisor import (
    Component,
    StackError,
    Supervisor,
    preflight,
    read_pid,
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
