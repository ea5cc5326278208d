"""Stopping rtpengine while calls are being recorded: the supervisor ends the sessions
first, so rtpengine exits cleanly and every recording is closed.

Tried without that step (rtpengine 10.5.3, Debian 12): SIGTERM with three recorded
sessions open made rtpengine die with SIGSEGV in ``recording_finish``, dump a core and
leave the three recordings' metadata unfinished in ``recordings/tmp``.
"""

from __future__ import annotations

import io
import shutil

import pytest

from core.settings import load
from edge import control as edge
from tawag.supervisor import Supervisor, components

pytestmark = pytest.mark.skipif(not shutil.which("rtpengine"), reason="rtpengine missing")

NG_PORT, CLI_PORT, RTP_MIN = 21223, 21224, 39800
SDP = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio {port} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n")
CALLS = 3


def test_stop_with_recorded_calls_open_exits_cleanly_and_closes_them(tmp_path):
    settings = load(environ={}, data_dir=tmp_path, rtpengine_ng_port=NG_PORT,
                    rtpengine_cli_port=CLI_PORT, rtpengine_http_port=CLI_PORT + 1,
                    rtp_port_min=RTP_MIN,
                    rtp_port_max=RTP_MIN + 99)
    rtpengine = next(c for c in components(settings) if c.name == "rtpengine")
    sup = Supervisor(settings, stack=[rtpengine], out=io.StringIO())
    sup.start()
    try:
        for i in range(CALLS):
            call = {"call-id": f"rec-{i}", "from-tag": "a"}
            for command in ({"command": "offer", "sdp": SDP.format(port=40000 + 4 * i),
                             "flags": ["record-call"]},
                            {"command": "answer", "to-tag": "b",
                             "sdp": SDP.format(port=40002 + 4 * i)},
                            {"command": "start recording"}):
                assert edge.rtpengine_ng(settings, {**call, **command})["result"] == "ok"
        unfinished = list((settings.recordings_dir / "tmp").glob("rtpengine-meta-*"))
        assert len(unfinished) == CALLS  # recording, not yet closed
    finally:
        [running] = sup.running
        sup.stop()
    assert running.proc is not None and running.proc.returncode == 0
    assert not list((settings.recordings_dir / "tmp").glob("rtpengine-meta-*"))
    closed = {p.name.removeprefix("rtpengine-meta-").rsplit("-", 1)[0]
              for p in (settings.recordings_dir / "metadata").glob("rtpengine-meta-*")}
    assert closed == {f"rec-{i}" for i in range(CALLS)}
