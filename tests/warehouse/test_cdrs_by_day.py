"""cdrs laid out by day (migration 0009): revisions and late events stay one call each,
windows read only their days, and a store of the old layout upgrades in place."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from conftest import SETTINGS, cdr_records, make_cdr

from core.records import Disposition
from warehouse import schema
from warehouse.client import ChdbClient
from warehouse.loader import Loader, routes_for
from warehouse.migrate import applied_versions, load_migrations, migrate
from warehouse.queries import cdr, kpi, wallboard
from warehouse.queries.window import CALL_WINDOW, TALK_LOOKBACK_DAYS

ROUTES = routes_for(SETTINGS)
D = datetime(2026, 11, 26, tzinfo=UTC)
"""A day; its midnight is the boundary the revisions below cross."""


def load(store, *revisions, offset: int = 0) -> None:
    """Each revision in its own insert (its own part), as the loader writes them."""
    loader = Loader(store, ROUTES, lambda d: None)
    for i, revision in enumerate(revisions):
        loader.load(cdr_records([revision], first_offset=offset + i))


def final_rows(store, call_id: str) -> list[dict]:
    return store.query(f"SELECT version, call_day, disposition, started_at FROM {schema.CDRS} "
                       "FINAL WHERE tenant = 'acme' AND call_id = {c:String}", {"c": call_id})


def answered(call_id: str, start: datetime, talk_s: int, version: int = 3, **changes):
    return make_cdr(call_id, version=version, started_at=start,
                    answered_at=start + timedelta(seconds=5),
                    ended_at=start + timedelta(seconds=5 + talk_s), ring_ms=5_000,
                    talk_ms=talk_s * 1000, disposition=Disposition.ANSWERED, closed=True,
                    agent="101", sip_code=200, event_count=version,
                    last_event_ts=start + timedelta(seconds=5 + talk_s), **changes)


def test_a_call_revised_after_midnight_stays_one_call_of_its_start_day(store):
    start = D - timedelta(seconds=10)  # offered 23:59:50, talks until 00:10:05
    load(store, make_cdr("late-night", started_at=start, last_event_ts=start),
         answered("late-night", start, talk_s=605))
    assert final_rows(store, "late-night") == [{
        "version": 3, "call_day": (D - timedelta(days=1)).date(),
        "disposition": "answered", "started_at": start}]
    day_before = kpi.kpi_summary(store, "acme", D - timedelta(days=1), D)
    day_after = kpi.kpi_summary(store, "acme", D, D + timedelta(days=1))
    assert (day_before["offered"], day_before["answered"]) == (1, 1)
    assert day_after["offered"] == 0
    # the talk after midnight belongs to the next day's talk time (read from the day before)
    talk = kpi.talk_time_by_interval(store, "acme", D, D + timedelta(days=1), "1 day")
    assert talk["talk_time_ms"].tolist() == [600_000]


def test_a_late_revision_of_an_old_call_lands_in_its_old_day_and_wins(store):
    old = D - timedelta(days=40, hours=-9)  # October: another partition
    load(store, make_cdr("old", started_at=old, last_event_ts=old),
         *[answered(f"new-{i}", D + timedelta(hours=i), talk_s=60) for i in range(3)])
    load(store, answered("old", old, talk_s=30, version=5), offset=10)  # weeks later
    assert final_rows(store, "old") == [{"version": 5, "call_day": old.date(),
                                         "disposition": "answered", "started_at": old}]
    parts = store.query("SELECT DISTINCT partition FROM system.parts WHERE database = "
                        "'tawag' AND table = 'cdrs' AND active ORDER BY partition")
    assert [p["partition"] for p in parts] == ["202610", "202611"]
    that_day = old.replace(hour=0)
    summary = kpi.kpi_summary(store, "acme", that_day, that_day + timedelta(days=1))
    assert (summary["offered"], summary["answered"]) == (1, 1)
    rows = cdr.cdrs_between(store, "acme", that_day, that_day + timedelta(days=1))
    assert rows[["call_id", "version"]].values.tolist() == [["old", 5]]


def test_windows_reaching_beyond_the_date_range_still_find_their_calls(store):
    """The API clamps an open period to [1970, 2200); a Date bound wraps outside
    1970-2149 (toDate of 2199-12-31 is 2020-07-26), so the day bounds are Date32."""
    load(store, *[answered(f"w{i}", D + timedelta(hours=i), talk_s=60) for i in range(3)])
    epoch, far = datetime(1970, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC)
    assert kpi.kpi_summary(store, "acme", epoch, far)["offered"] == 3
    assert len(cdr.cdrs_between(store, "acme", D, far)) == 3
    talk = kpi.talk_time_by_interval(store, "acme", D, D + timedelta(days=1), "1 day")
    assert talk["talk_time_ms"].tolist() == [180_000]
    assert kpi.kpi_summary(store, "acme", epoch, D + timedelta(days=1))["answered"] == 3
    # a talk window at the epoch looks back to 1969-12-31, a day only Date32 has
    first = kpi.talk_time_by_interval(store, "acme", epoch, epoch + timedelta(days=1), "1 day")
    assert first["talk_time_ms"].sum() == 0


def test_latest_cdrs_widens_from_the_newest_day_until_it_has_enough(store):
    starts = [D - timedelta(days=d, hours=h) for d in (0, 3, 20, 90) for h in (1, 2)]
    load(store, *[answered(f"c{i}", s, talk_s=10) for i, s in enumerate(starts)])
    newest_first = sorted(starts, reverse=True)
    for limit in (1, 2, 3, 5, 8, 50):
        got = cdr.latest_cdrs(store, "acme", limit)
        assert got["started_at"].tolist() == newest_first[:limit], limit
    assert cdr.latest_cdrs(store, "nobody", 5).empty


def test_wallboard_sees_a_call_still_ringing_since_before_midnight(store):
    start = D - timedelta(seconds=30)
    load(store, make_cdr("ringing", started_at=start, last_event_ts=start))
    assert wallboard.live_summary(store, "acme", start - timedelta(hours=1)) == {
        "ringing": 1, "talking": 0}
    assert wallboard.live_summary(store, "acme", D)["ringing"] == 0


def test_an_old_layout_store_upgrades_with_its_revisions(tmp_path):
    client = ChdbClient(tmp_path / "old")
    try:
        migrations = load_migrations()
        migrate(client, [m for m in migrations if m.version < 9])
        assert "call_day" not in {r["name"] for r in client.query(
            "SELECT name FROM system.columns WHERE database = 'tawag' AND table = 'cdrs'")}
        # an older fold moved started_at back across midnight in a later revision
        moved = D - timedelta(milliseconds=5)
        load(client, make_cdr("moved", started_at=D, last_event_ts=D),
             answered("moved", moved, talk_s=20),
             answered("plain", D + timedelta(hours=2), talk_s=40),
             make_cdr("plain", version=1, started_at=D + timedelta(hours=2)))
        before = client.query(f"SELECT call_id, version, disposition, started_at "
                              f"FROM {schema.CDRS} FINAL ORDER BY call_id")

        assert migrate(client, [m for m in migrations if m.version <= 9]) == ["0009_cdrs_by_day"]

        after = client.query(f"SELECT call_id, version, disposition, started_at, call_day "
                             f"FROM {schema.CDRS} FINAL ORDER BY call_id")
        assert [{k: r[k] for k in before[0]} for r in after] == before
        assert [r["call_day"] for r in after] == [moved.date(), D.date()]
        tables = {r["name"] for r in client.query("SHOW TABLES FROM tawag")}
        later = {schema.CDR_DAYS_LOADED_MV, *schema.ROLLUP_TABLES}  # migrations 0010-0011
        assert tables == {t.split(".")[1] for t in schema.TABLES if t not in later}
        sorting = client.query("SELECT sorting_key FROM system.tables WHERE database = "
                               "'tawag' AND name = 'cdrs'")[0]["sorting_key"]
        assert sorting == "tenant, call_day, call_id"

        # a crash after the rename, before the migration was recorded: the next run
        # repeats every statement and the calls are still the same
        for statement in migrations[8].statements:
            client.command(statement)
        again = client.query(f"SELECT call_id, version, disposition, started_at, call_day "
                             f"FROM {schema.CDRS} FINAL ORDER BY call_id")
        assert again == after
        assert 9 in applied_versions(client)
        assert migrate(client) == ["0010_cdr_rollups", "0011_cdr_rollup_talk_callers"]
        # new revisions, loaded after the upgrade, get their call_day from the DEFAULT
        load(client, answered("plain", D + timedelta(hours=2), talk_s=41, version=4),
             offset=20)
        assert final_rows(client, "plain")[0]["version"] == 4
        assert kpi.kpi_summary(client, "acme", D, D + timedelta(days=1))["offered"] == 1
    finally:
        client.close()


def test_a_window_reads_only_its_days(store):
    load(store, *[answered(f"c{i}", D - timedelta(days=40 * i), talk_s=10) for i in range(4)])
    plan = "\n".join(r["explain"] for r in store.query(
        f"EXPLAIN indexes = 1 SELECT count() FROM {schema.CDRS} FINAL WHERE {CALL_WINDOW}",
        {"tenant": "acme", "start": D, "end": D + timedelta(days=1)}))
    assert "Parts: 1/4" in plan  # one part a month: the other months are skipped
    primary = plan[plan.index("PrimaryKey"):]
    assert "call_day" in primary[:primary.index("Condition")]


def test_the_talk_lookback_covers_the_longest_call_the_edge_allows():
    longest_s = SETTINGS.max_call_duration_s + SETTINGS.no_answer_timeout
    assert longest_s < TALK_LOOKBACK_DAYS * 86_400
