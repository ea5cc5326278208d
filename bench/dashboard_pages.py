"""Page-load benchmark of the dashboards over 10 million synthetic CDRs (not a test).

Serves the benchmark store of ``bench/kpi_queries.py`` (generated there if missing) over
the warehouse's read-only HTTP interface, then runs each page with Streamlit's AppTest,
logged in as a user of the busiest tenant (``t1``, half the calls), its period set to the
synthetic month, and prints the time of a cold load (result caches cleared) and a warm
one (cached results, what the next viewer gets within the cache TTL).

    .venv/bin/python bench/dashboard_pages.py                # 10M calls (generate if needed)
    .venv/bin/python bench/dashboard_pages.py --rows 1000000 --path var/bench/chdb-1m

The store has CDRs only: the agents and missed-calls pages query their (empty) tables.
The wallboard shows today, outside the synthetic month, so its queries are also timed
directly for a day of the month.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import streamlit as st
from streamlit.testing.v1 import AppTest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kpi_queries import DAYS, MONTH_START, TENANT, generate  # noqa: E402

from dashboards.auth import TENANT_USER, User  # noqa: E402
from warehouse import schema  # noqa: E402
from warehouse.client import ChdbClient, HttpClient  # noqa: E402
from warehouse.http_server import make_server, serve_in_thread  # noqa: E402
from warehouse.migrate import migrate  # noqa: E402
from warehouse.queries import kpi, wallboard  # noqa: E402
from warehouse.readers import ReaderPool  # noqa: E402
from warehouse.schema import CDRS  # noqa: E402
from warehouse.users import SERVICE_USER, Authenticator, service_password  # noqa: E402

APP = Path(__file__).resolve().parent.parent / "dashboards" / "streamlit_app.py"
PORT = 31160
DAY = (MONTH_START + timedelta(days=15)).date()
WEEK = (DAY - timedelta(days=6), DAY)
MONTH = (MONTH_START.date() + timedelta(days=2), MONTH_START.date() + timedelta(days=29))
PAGES = {  # page -> session-state values of its period widgets
    "wallboard": {}, "today": {}, "calls": {"calls_period": WEEK},
    "agents": {"agents_day": DAY}, "missed_calls": {"missed_period": WEEK},
    "trends": {"trends_period": MONTH}, "quality": {"quality_period": WEEK},
    "sql": {},
}


def load_page(page: str, state: dict, clear: bool) -> float:
    """Seconds to run ``page`` once (AppTest: script run plus every query it makes)."""
    if clear:
        st.cache_data.clear()
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["auth_user"] = User("bench", TENANT, TENANT_USER)
    for key, value in state.items():
        at.session_state[key] = value
    at.switch_page(f"app_pages/{page}.py")
    began = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - began
    if at.exception or at.error:
        raise SystemExit(f"{page}: {[e.value for e in (*at.exception, *at.error)]}")
    return elapsed


def direct_wallboard(client: HttpClient, repeat: int) -> list[float]:
    """The wallboard's three queries for a day of the month, as the page makes them."""
    start = MONTH_START + timedelta(days=15)
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        wallboard.live_summary(client, TENANT, start)
        wallboard.live_calls(client, TENANT, start)
        wallboard.agents_by_state(client, TENANT)
        kpi.kpi_summary(client, TENANT, start, start + timedelta(days=1))
        samples.append(time.perf_counter() - began)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", type=Path, default=Path("var/bench/chdb"))
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    owner = ChdbClient(args.path)
    migrate(owner)
    if not owner.query(f"SELECT count() AS n FROM {CDRS}")[0]["n"]:
        print(f"generated {args.rows:,} calls in {generate(owner, args.rows):.0f} s")
    reader = ReaderPool(args.path, database=schema.DATABASE)
    data_dir = tempfile.mkdtemp(prefix="tawag-bench-")
    server = make_server("127.0.0.1", PORT, reader,
                         Authenticator(Path(data_dir) / "none.toml", service_password(data_dir)))
    thread = serve_in_thread(server)
    rows = owner.query(f"SELECT count() AS n FROM {CDRS}")[0]["n"]
    print(f"cdrs: {rows:,} rows; tenant {TENANT}; month {MONTH_START.date()} + {DAYS} days")
    os.environ.update({"TAWAG_WAREHOUSE_MODE": "embedded", "TAWAG_WAREHOUSE_HOST": "127.0.0.1",
                       "TAWAG_WAREHOUSE_HTTP_PORT": str(PORT), "TAWAG_DATA_DIR": data_dir})
    try:
        print(f"\n{'page':14} {'cold median s':>13} {'cold max s':>10} {'warm median s':>13}"
              f"   (n={args.repeat})")
        for page, state in PAGES.items():
            load_page(page, state, clear=True)  # first load of the process: imports, JIT
            cold = [load_page(page, state, clear=True) for _ in range(args.repeat)]
            warm = [load_page(page, state, clear=False) for _ in range(args.repeat)]
            print(f"{page:14} {statistics.median(cold):13.2f} {max(cold):10.2f} "
                  f"{statistics.median(warm):13.2f}")
        direct = direct_wallboard(HttpClient(f"http://127.0.0.1:{PORT}/", user=SERVICE_USER,
                                           password=service_password(data_dir)), args.repeat)
        print(f"\nwallboard queries for {DAY} (live, agents, kpi_summary): median "
              f"{statistics.median(direct):.2f} s, max {max(direct):.2f} s")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
        reader.close()
        owner.close()


if __name__ == "__main__":
    main()
