"""Hold music: how many queued callers rtpengine can play music to at once on this machine.

    .venv/bin/python bench/hold_music.py [--streams 25,50,100,200,400] [--seconds 10]

Starts its own rtpengine (the edge's command line, port block 31000, RTP 47000-48999) and,
for each step, sets up that many queued calls the way route[QUEUE_MUSIC] does over the ng
protocol - the caller's PCMA offer, the send-only placeholder's answer, ``play media`` of
the built-in melody (:mod:`edge.hold_music`, decoded and encoded to PCMA by rtpengine) -
with one UDP socket per caller receiving the music. Over the window it reports, per step:
packets received of those due (50 a second per caller, 20 ms each), the p99 and max gap
between two packets of a caller, and rtpengine's CPU time (user + system, /proc) as a share
of one core. Kamailio is not involved: the music's cost is rtpengine's. The receiving
Python process runs on the same two cores, so the top steps measure both.

A benchmark, not a test: it prints figures and never fails on them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.settings import Settings  # noqa: E402
from edge.control import rtpengine_command, rtpengine_ready, wait_until  # noqa: E402
from edge.hold_music import ensure_hold_music  # noqa: E402
from edge.rtpengine import ng_command  # noqa: E402

PACKETS_PER_S = 50
PLACEHOLDER = ("v=0\r\no=tawag 0 0 IN IP4 127.0.0.1\r\ns=queue\r\nc=IN IP4 127.0.0.1\r\n"
               "t=0 0\r\nm=audio 9 RTP/AVP 8 0\r\na=sendonly\r\n")
FLAGS = {"replace": ["origin", "session-connection"]}


def offer(port: int) -> str:
    return (f"v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=sendrecv\r\n")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def step(settings: Settings, pid: int, music: Path, streams: int, seconds: float,
         tag: str) -> dict[str, float]:
    def ng(command: dict) -> dict:
        return ng_command(settings.sip_host, settings.rtpengine_ng_port, command, timeout=5)

    sel = selectors.DefaultSelector()
    socks, calls = [], []
    for i in range(streams):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, i)
        socks.append(sock)
        call = f"bench-{tag}-{i}"
        calls.append(call)
        ng({"command": "offer", "call-id": call, "from-tag": "caller",
            "sdp": offer(sock.getsockname()[1]), **FLAGS})
        ng({"command": "answer", "call-id": call, "from-tag": "caller", "to-tag": "queue",
            "sdp": PLACEHOLDER, **FLAGS})
        reply = ng({"command": "play media", "call-id": call, "from-tag": "caller",
                    "file": str(music), "repeat-times": 1000})
        if reply.get("result") != "ok":
            raise SystemExit(f"play media failed at stream {i}: {reply}")
    # let every player start before the window
    warm_until = time.monotonic() + 1.0
    while time.monotonic() < warm_until:
        for key, _ in sel.select(0.05):
            with contextlib.suppress(BlockingIOError):
                key.fileobj.recv(2048)
    counts = [0] * streams
    last = [0.0] * streams
    gaps: list[float] = []
    cpu0, t0 = cpu_s(pid), time.monotonic()
    end = t0 + seconds
    while (now := time.monotonic()) < end:
        for key, _ in sel.select(0.05):
            i = key.data
            while True:
                try:
                    key.fileobj.recv(2048)
                except BlockingIOError:
                    break
                now = time.monotonic()
                if last[i]:
                    gaps.append(now - last[i])
                last[i] = now
                counts[i] += 1
    elapsed, cpu = time.monotonic() - t0, cpu_s(pid) - cpu0
    for call in calls:
        ng({"command": "delete", "call-id": call, "from-tag": "caller"})
    for sock in socks:
        sel.unregister(sock)
        sock.close()
    gaps.sort()
    due = streams * PACKETS_PER_S * elapsed
    return {"streams": streams, "received": sum(counts) / due,
            "worst_stream": min(counts) / (PACKETS_PER_S * elapsed),
            "gap_p99_ms": gaps[int(len(gaps) * 0.99)] * 1000 if gaps else float("nan"),
            "gap_max_ms": gaps[-1] * 1000 if gaps else float("nan"),
            "cpu_core": cpu / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default="25,50,100,200,400",
                        help="comma-separated numbers of simultaneous queued callers")
    parser.add_argument("--seconds", type=float, default=10.0, help="window per step")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tawag-bench-music-") as tmp:
        settings = Settings(data_dir=Path(tmp), rtpengine_ng_port=31223,
                            rtpengine_cli_port=31224, rtpengine_http_port=31225,
                            rtp_port_min=47000, rtp_port_max=48999)
        for path in (settings.run_dir, settings.recordings_dir):
            path.mkdir(parents=True)
        music = ensure_hold_music(settings.hold_music_file)
        log = (Path(tmp) / "rtpengine.log").open("wb")
        proc = subprocess.Popen(rtpengine_command(settings), stdout=log, stderr=log)
        try:
            if not wait_until(lambda: rtpengine_ready(settings), timeout=10):
                raise SystemExit("rtpengine did not answer its ng ping")
            print(f"rtpengine {proc.pid}; load average {os.getloadavg()[0]:.1f}; "
                  f"{args.seconds:.0f} s per step")
            print("streams  received  worst stream  gap p99 ms  gap max ms  rtpengine CPU")
            for n in (int(v) for v in args.streams.split(",")):
                r = step(settings, proc.pid, music, n, args.seconds, str(n))
                print(f"{n:7d}  {r['received']:8.1%}  {r['worst_stream']:12.1%}  "
                      f"{r['gap_p99_ms']:10.1f}  {r['gap_max_ms']:10.1f}  "
                      f"{r['cpu_core']:12.0%}")
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            log.close()


if __name__ == "__main__":
    main()
