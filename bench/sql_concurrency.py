"""One tenant's heavy statement vs another tenant's dashboard query, on the HTTP port.

Tenant ``acme`` (user alice) runs a CPU-bound statement for ``--heavy-s`` seconds (its
own max_execution_time, lowered through the URL); meanwhile tenant ``beta`` (user bob)
runs a small dashboard-like aggregate every 0.2 s. Printed: bob's latencies with the
reader pool (``--readers``, default 4) and with one reader (the old single-session
behaviour), so the stall is visible::

    python bench/sql_concurrency.py [--heavy-s 20] [--readers 4]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from warehouse import schema  # noqa: E402
from warehouse.client import ChdbClient  # noqa: E402
from warehouse.http_server import make_server, serve_in_thread  # noqa: E402
from warehouse.migrate import migrate  # noqa: E402
from warehouse.readers import ReaderPool  # noqa: E402
from warehouse.users import Authenticator, add_user  # noqa: E402

PORT = 38199
HEAVY = ("SELECT sum(cityHash64(a.number, b.number)) FROM numbers(1000000) AS a "
         "CROSS JOIN numbers(1000000) AS b")
LIGHT = "SELECT tenant, count() AS calls FROM cdrs FINAL GROUP BY tenant"


def measure(store_path: Path, users: Path, passwords: dict[str, str], readers: int,
            heavy_s: int) -> tuple[list[float], float]:
    pool = ReaderPool(store_path, size=readers, database=schema.DATABASE)
    server = make_server("127.0.0.1", PORT, pool, Authenticator(users))
    thread = serve_in_thread(server)
    done = threading.Event()
    heavy_took: list[float] = []

    def heavy() -> None:
        t0 = time.perf_counter()
        httpx.post(server.url, content=HEAVY.encode(), auth=("alice", passwords["alice"]),
                   params={"max_execution_time": str(heavy_s)}, timeout=heavy_s + 30)
        heavy_took.append(time.perf_counter() - t0)
        done.set()

    latencies = []
    with httpx.Client(base_url=server.url, auth=("bob", passwords["bob"]),
                      timeout=heavy_s + 30) as bob:
        bob.post("/", content=LIGHT.encode())  # warm: scrypt check cached, session used
        worker = threading.Thread(target=heavy)
        worker.start()
        time.sleep(0.5)
        while not done.is_set():
            t0 = time.perf_counter()
            resp = bob.post("/", content=LIGHT.encode())
            resp.raise_for_status()
            latencies.append(time.perf_counter() - t0)
            time.sleep(0.2)
        worker.join()
    server.shutdown()
    server.server_close()
    thread.join()
    pool.close()
    return latencies, heavy_took[0]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--heavy-s", type=int, default=20)
    parser.add_argument("--readers", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = ChdbClient(root / "chdb")
        migrate(store)
        store.command("INSERT INTO tawag.cdrs (tenant, call_id, version) SELECT "
                      "if(number % 2, 'acme', 'beta'), toString(number), 1 "
                      "FROM numbers(100000)")
        users = root / "users.toml"
        passwords = {"alice": add_user(users, "alice", tenant="acme"),
                     "bob": add_user(users, "bob", tenant="beta")}
        print(f"heavy statement of acme: {args.heavy_s} s; beta's dashboard query meanwhile")
        print(f"{'readers':>7} {'n':>4} {'median ms':>10} {'p95 ms':>8} {'max ms':>8} "
              f"{'heavy s':>8}")
        for readers in (args.readers, 1):
            lat, heavy_took = measure(root / "chdb", users, passwords, readers, args.heavy_s)
            ms = sorted(x * 1000 for x in lat)
            p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
            print(f"{readers:>7} {len(ms):>4} {statistics.median(ms):>10.1f} {p95:>8.1f} "
                  f"{ms[-1]:>8.1f} {heavy_took:>8.1f}")
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
