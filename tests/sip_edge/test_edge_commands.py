"""edge.control without running daemons: command lines, the cfg check, bencode, probes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from core.settings import Settings, load
from edge import control as edge

UNUSED_PORT = 25098
"""Nothing listens here during the tests (inside the SIP edge tests' port range)."""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load(
        environ={},
        data_dir=tmp_path,
        sip_port=25060,
        kamailio_http_port=25061,
        evapi_port=25062,
        rtpengine_ng_port=25063,
        no_answer_timeout=7,
    )


def option_values(command: list[str], option: str) -> list[str]:
    return [command[i + 1] for i, arg in enumerate(command) if arg == option]


def test_kamailio_gets_every_host_value_as_a_define(settings: Settings) -> None:
    defines = option_values(edge.kamailio_command(settings), "-A")

    assert "SIP_LISTEN_UDP=udp:127.0.0.1:25060" in defines
    assert "HTTP_LISTEN=tcp:127.0.0.1:25061" in defines
    assert 'EVAPI_BIND="127.0.0.1:25062"' in defines
    assert 'RTPENGINE_SOCK="udp:127.0.0.1:25063"' in defines
    assert 'SIP_DOMAIN="pbx.test"' in defines
    assert "NO_ANSWER_TIMEOUT_MS=7000" in defines
    assert {"WITH_RTPENGINE", "WITH_TAWAG_EVAPI"} <= set(defines)


def test_the_platform_runs_the_pbx_with_auth_and_flood_protection_as_settings_say(
    settings: Settings,
) -> None:
    defines = option_values(edge.kamailio_command(settings), "-A")
    assert {"WITH_PBX", "WITH_AUTH", "WITH_ANTIFLOOD", "WITH_STEERING"} <= set(defines)
    assert "MAX_CALL_DURATION_S=7200" in defines and "PIKE_DENSITY=30" in defines

    open_edge = load(environ={}, data_dir=settings.data_dir, sip_auth=False, pike_density=0,
                     max_call_duration_s=60)
    defines = option_values(edge.kamailio_command(open_edge), "-A")
    assert "WITH_PBX" in defines
    assert not {"WITH_AUTH", "WITH_ANTIFLOOD"} & set(defines)
    assert "MAX_CALL_DURATION_S=60" in defines


def test_kamailio_runs_in_the_foreground_with_its_files_in_run_dir(settings: Settings) -> None:
    command = edge.kamailio_command(settings)

    assert {"-DD", "-E"} <= set(command)
    assert "-bg" not in command
    assert option_values(command, "-P") == [str(settings.run_dir / "kamailio.pid")]
    assert option_values(command, "-Y") == [str(settings.run_dir)]
    assert option_values(command, "-f") == [str(edge.KAMAILIO_CFG)]


@pytest.mark.skipif(shutil.which("kamailio") is None, reason="kamailio is not installed")
@pytest.mark.parametrize(
    "switches",
    [
        edge.DEFAULT_SWITCHES,
        (),
        ("WITH_AUTH",),
        ("WITH_PBX",),
        (*edge.DEFAULT_SWITCHES, "WITH_AUTH", "WITH_PBX", "WITH_ANTIFLOOD"),
        (*edge.DEFAULT_SWITCHES, "WITH_AUTH", "WITH_PBX", "WITH_ANTIFLOOD", "WITH_STEERING"),
    ],
)
def test_shipped_cfg_passes_kamailio_check(settings: Settings, switches: tuple[str, ...]) -> None:
    command = edge.kamailio_command(settings, switches=switches, check_only=True)

    checked = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)

    assert checked.returncode == 0, checked.stderr[-2000:]
    assert "udp: 127.0.0.1 [127.0.0.1]:25060" in checked.stdout + checked.stderr


def test_rtpengine_ignores_etc_and_uses_userspace_on_the_settings_ports(
    settings: Settings,
) -> None:
    command = edge.rtpengine_command(settings)

    assert command[:2] == ["rtpengine", "--config-file=none"]
    assert {"--foreground", "--table=-1", "--listen-ng=127.0.0.1:25063"} <= set(command)
    assert f"--port-min={settings.rtp_port_min}" in command
    assert f"--recording-dir={settings.recordings_dir}" in command


def test_bencode_round_trips_an_ng_message() -> None:
    message = {"command": "offer", "flags": ["trust-address"], "sdp": "v=0\r\n", "ttl": 5}

    encoded = edge.bencode(message)

    assert encoded == b"d7:command5:offer5:flagsl13:trust-addresse3:sdp5:v=0\r\n3:ttli5ee"
    assert edge.bdecode(encoded) == message


@pytest.mark.parametrize("bad", [b"i12", b"5:abc", b"x", b"d3:keye"])
def test_bdecode_rejects_truncated_or_unknown_input(bad: bytes) -> None:
    with pytest.raises(ValueError):
        edge.bdecode(bad)


def test_probes_say_not_ready_when_nothing_listens(settings: Settings) -> None:
    nothing = load(
        environ={},
        data_dir=settings.data_dir,
        rtpengine_ng_port=UNUSED_PORT,
        kamailio_http_port=UNUSED_PORT,
    )

    assert edge.rtpengine_ready(nothing) is False
    assert edge.kamailio_ready(nothing) is False
    with pytest.raises(edge.EdgeError):
        edge.kamailio_rpc(nothing, "core.version")


def test_wait_until_gives_up_after_the_timeout() -> None:
    assert edge.wait_until(lambda: False, timeout=0.05, interval=0.01) is False
    assert edge.wait_until(lambda: True, timeout=0) is True
