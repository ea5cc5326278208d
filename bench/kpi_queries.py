"""Benchmark of the dashboard's warehouse queries on 10 million synthetic CDRs (not a test).

Generates the CDRs inside the embedded store with one ``INSERT ... SELECT FROM numbers()``
(no Python loop), then times each dashboard query (median, p90, p95) and a pandas baseline
computing the headline KPIs from the same rows (``bench/kpi_pandas.py``), as a ratio.

    .venv/bin/python bench/kpi_queries.py                  # 10 M calls, one month
    .venv/bin/python bench/kpi_queries.py --rows 100000000 --days 360 \
        --path var/bench/chdb-100m                         # twelve months
    .venv/bin/python bench/kpi_queries.py --rows 1000000   # a smaller store, a quick look
    .venv/bin/python bench/kpi_queries.py --optimize       # time after OPTIMIZE ... FINAL

The synthetic history (reproducible: every random draw is a hash of the row number):

* ``--days`` days (30 by default) ending 2026-11-01 UTC, so the month timed, from
  2026-10-02, is the last one whatever the history's length; start times around a
  13:00 UTC peak (normal, sd 3 h);
* 4 tenants with 50 / 25 / 15 / 10 % of the calls, 50 agents and 5 DIDs each;
* 75 % inbound, 20 % outbound, 5 % internal; inbound callers drawn from 4 million numbers,
  skewed (u^2) so that some call often;
* outcomes 70 % answered, 12 % cancelled (abandoned), 8 % no answer, 6 % busy,
  4 % failed, 0.1 % still in progress;
* waits: answered exponential (mean 12 s), abandoned exponential (mean 25 s), no-answer
  30 s timer, busy/failed a few seconds; talk lognormal (median 2 min, sigma 0.9, cap 4 h);
* every 5th call also has an older ``in_progress`` revision (version 1) inserted after its
  final one (version 4): 12 million rows for 10 million calls, so FINAL has work to do.

Before timing, the KPI rollup (``warehouse.rollup``) of every day loaded is rebuilt, as
the loader does between polls (``--no-rollup`` skips it); the time it took is printed.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kpi_pandas

from warehouse import rollup
from warehouse.client import ChdbClient
from warehouse.migrate import migrate
from warehouse.queries import cdr, kpi
from warehouse.schema import CDR_ROLLUP, CDR_ROLLUP_CALLERS, CDR_ROLLUP_TALK, CDRS

MONTH_START = datetime(2026, 10, 2, tzinfo=UTC)
DAYS = 30
MONTH_END = MONTH_START + timedelta(days=DAYS)
"""The timed month: the last ``DAYS`` days of the history, whatever its length."""
TENANT = "t1"
"""The largest tenant (half the calls): the worst case for one tenant's dashboard."""

# u(k): the k-th uniform draw of a row, in [0, 1), from a hash of the row number.
_U = "(cityHash64(number, {k}) / 18446744073709551616.0)"


def u(k: int) -> str:
    return _U.format(k=k)


def _normal(k: int) -> str:
    """A standard normal draw (Box-Muller over two hashed uniforms)."""
    return f"(sqrt(-2 * log(1 - {u(k)})) * cos(2 * pi() * {u(k + 1)}))"


# Columns of a call, in terms of the row number; ``disp`` etc. are aliases reused below.
_FINAL_COLUMNS = f"""
    multiIf({u(0)} < 0.5, 't1', {u(0)} < 0.75, 't2', {u(0)} < 0.9, 't3', 't4') AS tenant,
    concat('bench-', toString(number)) AS call_id,
    toUInt64(4) AS version,
    multiIf({u(1)} < 0.75, 'inbound', {u(1)} < 0.95, 'outbound', 'internal') AS dir,
    multiIf({u(2)} < 0.001, 'in_progress', {u(2)} < 0.701, 'answered',
            {u(2)} < 0.821, 'cancelled', {u(2)} < 0.901, 'no_answer',
            {u(2)} < 0.961, 'busy', 'failed') AS disp,
    toString(100 + cityHash64(number, 3) % 50) AS ext,
    concat('+7916', leftPad(toString(toUInt64(4000000 * pow({u(4)}, 2))), 7, '0')) AS client,
    addMilliseconds(toDateTime64({{first_day:String}}, 3, 'UTC'),
        toInt64(cityHash64(number, 5) % {{days:UInt32}}) * 86400000
        + toInt64(((13 * 3600 + 3 * 3600 * {_normal(6)}) % 86400 + 86400) % 86400 * 1000))
        AS started_at,
    multiIf(disp = 'answered', toInt64(-log(1 - {u(8)}) * 12000),
            disp = 'cancelled', toInt64(-log(1 - {u(8)}) * 25000),
            disp = 'no_answer', toInt64(30000 + {u(8)} * 500),
            disp = 'in_progress', toInt64(0),
            toInt64(200 + {u(8)} * 3000)) AS ring,
    if(disp = 'answered',
       toInt64(least(exp(log(120) + 0.9 * {_normal(9)}), 14400) * 1000), toInt64(0)) AS talk
"""

_CDR_SELECT = f"""
SELECT tenant, call_id, version, dir AS direction,
       if(dir = 'outbound', ext, client) AS caller,
       if(dir = 'outbound', client, ext) AS callee,
       concat('+749500000', toString(cityHash64(number, 11) % 5)) AS did,
       if(disp = 'answered', ext, NULL) AS agent,
       started_at,
       if(disp = 'answered', addMilliseconds(started_at, ring), NULL) AS answered_at,
       if(disp = 'in_progress', NULL, addMilliseconds(started_at, ring + talk)) AS ended_at,
       ring AS ring_ms, talk AS talk_ms, disp AS disposition,
       CAST(multiIf(disp = 'answered', 200, disp = 'cancelled', 487, disp = 'no_answer', 480,
               disp = 'busy', 486, disp = 'failed', 503, NULL) AS Nullable(UInt16)) AS sip_code,
       NULL AS reason, if(cityHash64(number, 12) % 2 = 0, 'caller', 'callee') AS hangup_by,
       disp != 'in_progress' AS closed, NULL AS recording,
       if(disp = 'answered', toFloat32(3.8 + {u(13)} * 0.6), NULL) AS mos,
       if(disp = 'answered', toFloat32({u(14)} * 0.02), NULL) AS packet_loss,
       if(disp = 'answered', toFloat32({u(15)} * 20), NULL) AS jitter_ms,
       toUInt32(version) AS event_count,
       ifNull(ended_at, started_at) AS last_event_ts,
       'bench' AS kafka_topic, toUInt32(0) AS kafka_partition, number AS kafka_offset
FROM (SELECT number, {_FINAL_COLUMNS} FROM numbers({{rows:UInt64}}))
"""

_COLUMNS = ("tenant, call_id, version, direction, caller, callee, did, agent, started_at, "
            "answered_at, ended_at, ring_ms, talk_ms, disposition, sip_code, reason, "
            "hangup_by, closed, recording, mos, packet_loss, jitter_ms, event_count, "
            "last_event_ts, kafka_topic, kafka_partition, kafka_offset")

# The older revision of every 5th call: same tenant and call_id, still ringing.
_REVISION_SELECT = f"""
SELECT tenant, call_id, toUInt64(1), direction, caller, callee, did, NULL, started_at,
       NULL, NULL, toInt64(0), toInt64(0), 'in_progress', NULL, NULL, NULL, false, NULL,
       NULL, NULL, NULL, toUInt32(1), started_at, kafka_topic, kafka_partition, kafka_offset
FROM ({_CDR_SELECT}) WHERE kafka_offset % 5 = 0
"""


def generate(client: ChdbClient, rows: int, days: int = DAYS) -> float:
    """Insert ``rows`` final CDRs over ``days`` days ending at MONTH_END and the older
    revisions of every 5th; seconds taken."""
    first_day = MONTH_END - timedelta(days=days)
    params = {"rows": rows, "days": days, "first_day": first_day.strftime("%Y-%m-%d %H:%M:%S")}
    began = time.perf_counter()
    client.command(f"INSERT INTO {CDRS} ({_COLUMNS}) {_CDR_SELECT}", params)
    client.command(f"INSERT INTO {CDRS} ({_COLUMNS}) {_REVISION_SELECT}", params)
    return time.perf_counter() - began


def store_figures(client: ChdbClient, path: Path) -> dict[str, Any]:
    """Rows, calls, active parts and bytes on disk of the CDR table; the store's du."""
    parts = client.query(
        "SELECT sum(rows) AS rows, count() AS parts, sum(bytes_on_disk) AS bytes "
        "FROM system.parts WHERE database = 'tawag' AND table = 'cdrs' AND active")[0]
    on_disk = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return {**parts, "store_du_bytes": on_disk}


def time_query(run: Callable[[], Any], repeat: int) -> dict[str, float]:
    """First (cold-ish) run, then ``repeat`` timed runs: median, p90 and p95 in ms."""
    began = time.perf_counter()
    run()
    first = (time.perf_counter() - began) * 1000
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        run()
        samples.append((time.perf_counter() - began) * 1000)
    cuts = statistics.quantiles(samples, n=20, method="inclusive")
    return {"first": first, "median": statistics.median(samples), "p90": cuts[17],
            "p95": cuts[18]}


def dashboard_queries(client: ChdbClient) -> dict[str, Callable[[], Any]]:
    """What the dashboard asks, for the busiest tenant on a mid-month day and the month."""
    day = MONTH_START + timedelta(days=15)
    next_day, month_end = day + timedelta(days=1), MONTH_END
    return {
        "kpi_summary, 1 day": lambda: kpi.kpi_summary(client, TENANT, day, next_day),
        "kpi_summary, 30 days": lambda: kpi.kpi_summary(client, TENANT, MONTH_START,
                                                        month_end),
        "kpis_by_interval 1 hour, 1 day": lambda: kpi.kpis_by_interval(
            client, TENANT, day, next_day, "1 hour"),
        "kpis_by_interval 1 day, 30 days": lambda: kpi.kpis_by_interval(
            client, TENANT, MONTH_START, month_end, "1 day"),
        "talk_time_by_interval 15 min, 1 day": lambda: kpi.talk_time_by_interval(
            client, TENANT, day, next_day, "15 minute"),
        "cdr.calls_by_hour, 1 day": lambda: cdr.calls_by_hour(client, TENANT, day, next_day),
        "cdr.latest_cdrs(50)": lambda: cdr.latest_cdrs(client, TENANT, 50),
    }


def calls_of(client: ChdbClient, tenant: str) -> int:
    """Distinct calls of ``tenant`` (FINAL: one row per call)."""
    rows = client.query(f"SELECT count() AS n FROM {CDRS} FINAL WHERE tenant = {{t:String}}",
                        {"t": tenant})
    return int(rows[0]["n"])


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def pandas_baseline(client: ChdbClient, windows: dict[str, tuple[datetime, datetime]],
                    warehouse_ms: dict[str, float], repeat: int) -> None:
    """Per window: read the rows into a DataFrame, compute the KPIs in pandas, compare."""
    print(f"\n{'pandas baseline (same KPIs, same rows)':40} {'rows':>10} {'read ms':>9} "
          f"{'pandas ms':>10} {'ratio':>7}  agree")
    for name, (start, end) in windows.items():
        began = time.perf_counter()
        rows = kpi_pandas.read_rows(client, TENANT, start, end)
        read_ms = (time.perf_counter() - began) * 1000

        def compute(frame: Any = rows) -> dict[str, Any]:
            return kpi_pandas.kpis(frame, kpi.DEFAULT_THRESHOLD_S, kpi.DEFAULT_REPEAT_WINDOW_H)

        t = time_query(compute, repeat)
        differ = kpi_pandas.agree(compute(), kpi.kpi_summary(client, TENANT, start, end))
        ratio = t["median"] / warehouse_ms[name]
        print(f"{name:40} {len(rows):10,} {read_ms:9.0f} {t['median']:10.0f} {ratio:6.1f}x  "
              f"{'yes' if not differ else 'NO: ' + ', '.join(differ)}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", type=Path, default=Path("var/bench/chdb"),
                        help="chdb data path (default var/bench/chdb, created if missing)")
    parser.add_argument("--rows", type=int, default=10_000_000, help="calls to generate")
    parser.add_argument("--days", type=int, default=DAYS,
                        help=f"days of history to generate, ending {MONTH_END:%Y-%m-%d} "
                             f"(default {DAYS}: one month; 360 for twelve)")
    parser.add_argument("--repeat", type=int, default=20, help="timed runs per query")
    parser.add_argument("--optimize", action="store_true",
                        help="OPTIMIZE TABLE ... FINAL before timing (revisions merged)")
    parser.add_argument("--no-pandas", action="store_true", help="skip the pandas baseline")
    parser.add_argument("--raw", action="store_true",
                        help="time the KPI queries without the rollup (cdrs FINAL alone), "
                             "for a before/after on the same store")
    parser.add_argument("--no-rollup", action="store_true",
                        help="do not build the KPI rollup first (time cdrs FINAL alone; a "
                             "rollup already built is still read)")
    parser.add_argument("--generate-only", action="store_true",
                        help="generate the store (if empty) and stop: time it in a later run")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    client = ChdbClient(args.path)
    migrate(client)
    existing = client.query(f"SELECT count() AS n FROM {CDRS}")[0]["n"]
    if existing:
        print(f"store at {args.path} already holds {existing:,} rows: not generating")
    else:
        seconds = generate(client, args.rows, args.days)
        print(f"generated {args.rows:,} calls (+ revisions) over {args.days} days "
              f"in {seconds:.1f} s")
    if args.generate_only:
        client.close()
        return
    if args.optimize:
        began = time.perf_counter()
        client.command(f"OPTIMIZE TABLE {CDRS} FINAL")
        print(f"OPTIMIZE TABLE FINAL took {time.perf_counter() - began:.1f} s")
    if args.raw:
        kpi._rollup_plan = lambda *a, **k: None  # every KPI query reads cdrs FINAL alone
        print("rollup switched off (--raw): every KPI from cdrs FINAL")
    elif not args.no_rollup:
        began = time.perf_counter()
        days = rollup.refresh(client)
        rows = [client.query(f"SELECT count() AS n FROM {t}")[0]["n"]
                for t in (CDR_ROLLUP, CDR_ROLLUP_TALK, CDR_ROLLUP_CALLERS)]
        print(f"rollup: rebuilt {days} (tenant, day) in {time.perf_counter() - began:.1f} s; "
              f"rows: {rows[0]:,} components, {rows[1]:,} talk slots, {rows[2]:,} caller "
              "pieces")
    figures = store_figures(client, args.path)
    print(f"cdrs: {figures['rows']:,} rows in {figures['parts']} active parts, "
          f"{figures['bytes'] / 2**20:.0f} MiB on disk "
          f"(store {figures['store_du_bytes'] / 2**20:.0f} MiB); "
          f"tenant {TENANT}: {calls_of(client, TENANT):,} calls")
    print(f"load average before timing: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"\n{'query':40} {'first ms':>9} {'median ms':>10} {'p90 ms':>8} {'p95 ms':>8}"
          f"   (n={args.repeat})")
    medians = {}
    for name, run in dashboard_queries(client).items():
        t = time_query(run, args.repeat)
        medians[name] = t["median"]
        print(f"{name:40} {t['first']:9.0f} {t['median']:10.0f} {t['p90']:8.0f} "
              f"{t['p95']:8.0f}")
    if not args.no_pandas:
        day = MONTH_START + timedelta(days=15)
        pandas_baseline(client, {"kpi_summary, 1 day": (day, day + timedelta(days=1)),
                                 "kpi_summary, 30 days": (MONTH_START, MONTH_END)},
                        medians, max(3, args.repeat // 5))
    print(f"\nload average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}; "
          f"peak RSS {peak_rss_mib():.0f} MiB")
    client.close()


if __name__ == "__main__":
    main()
