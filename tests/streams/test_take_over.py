"""A worker killed mid-batch: its successor's agent rows supersede what it sent ahead.

On the events of a real run (``golden/sipp_120_calls.jsonl.gz``: 120 sipp calls from 101
to 102 and the busy 103 through the edge, as ``tawag.call-events`` held them, with their
partitions), a ``kill -9`` is modelled with the replay's fold (``tawag.replay.Replayer``:
the worker's own steps over plain dicts): the worker folds the partitions interleaved one
way, dies, and its successor starts from the committed offsets and an earlier or equal
point of the rows, and folds the rest interleaved another way. The warehouse reads, per
key, the revision with the highest version (ReplacingMergeTree with FINAL).

- the rows as far as the records (redelivered events are repeats): the clean fold's rows;
- records ahead of their rows (Faust writes a table through its send buffer, the records
  go straight to the client, so a kill can land records whose rows never reached the
  changelog): the clean fold's rows as well, because the successor numbers each row it
  takes over above any earlier version (``agent_state.rebased``);
- the same without that floor: some crash points leave an orphan revision standing, the
  kind a CI run of test_kill_under_traffic saw (an agent's state ending 1 ms late for good).
"""

from __future__ import annotations

import copy
import gzip
import json
import random
from pathlib import Path
from typing import Any

from streams.agents import agent_stats
from tawag.replay import Replayer

GOLDEN = Path(__file__).parent / "golden" / "sipp_120_calls.jsonl.gz"
KEYS = {"agent_states": ("tenant", "agent", "since"),
        "agent_stats": ("tenant", "agent", "interval_kind", "interval_start"),
        "cdrs": ("tenant", "call_id")}


def partitions() -> dict[int, list[bytes]]:
    """The recorded events per partition of tawag.call-events, in offset order."""
    out: dict[int, list[bytes]] = {}
    for line in gzip.decompress(GOLDEN.read_bytes()).splitlines():
        item = json.loads(line)
        out.setdefault(item["partition"], []).append(
            json.dumps(item["event"], separators=(",", ":")).encode())
    return out


def interleave(rng: random.Random, queues: dict[int, list[bytes]]) -> list[bytes]:
    """The partitions merged as a consumer may meet them: small runs from each in turn."""
    pos = dict.fromkeys(queues, 0)
    out: list[bytes] = []
    while live := [p for p, q in queues.items() if pos[p] < len(q)]:
        p = rng.choice(live)
        n = rng.randint(1, 6)
        out += queues[p][pos[p]:pos[p] + n]
        pos[p] += n
    return out


def as_read(records: list[bytes], table: str) -> dict[tuple, dict[str, Any]]:
    """The rows FINAL reads: per key the highest version (ties: the later insert),
    retractions dropped, ``version`` left out."""
    best: dict[tuple, dict[str, Any]] = {}
    for raw in records:
        row = json.loads(raw)
        key = tuple(row[k] for k in KEYS[table])
        if key not in best or row["version"] >= best[key]["version"]:
            best[key] = row
    return {k: {c: v for c, v in row.items() if c != "version"}
            for k, row in best.items() if not row.get("deleted")}


def rows(replayer: Replayer) -> dict[str, dict[tuple, dict[str, Any]]]:
    return {table: as_read(getattr(replayer.out, table), table) for table in KEYS}


def fold(values: list[bytes]) -> Replayer:
    replayer = Replayer()
    for value in values:
        replayer.event(value)
    return replayer


def crash(seed: int, events: dict[int, list[bytes]], *, records_ahead: bool) -> Replayer:
    """Fold up to a committed point, then a few more events per partition; the worker
    dies; its successor holds the rows of the committed point (``records_ahead``: the
    records of the few went out, their rows never reached the changelog) or of the few
    too (the runner's order), and reads every partition again from the committed point."""
    rng = random.Random(seed)
    committed = {p: rng.randint(0, len(q)) for p, q in events.items()}
    beyond = {p: min(len(q), committed[p] + rng.randint(0, 8)) for p, q in events.items()}
    worker = Replayer()
    for value in interleave(rng, {p: q[:committed[p]] for p, q in events.items()}):
        worker.event(value)
    changelog = copy.deepcopy(worker.tables)
    for value in interleave(rng, {p: q[committed[p]:beyond[p]] for p, q in events.items()}):
        worker.event(value)
    if records_ahead:
        worker.tables = changelog
    agent_stats._DECODED.clear()  # a new process: rows are decoded from the table afresh
    for value in interleave(rng, {p: q[committed[p]:] for p, q in events.items()}):
        worker.event(value)
    return worker


SEEDS = range(8)


def test_a_crash_loses_and_repeats_nothing_when_rows_precede_their_records() -> None:
    events = partitions()
    assert sum(map(len, events.values())) == 458 and len(events) == 4
    clean = rows(fold(interleave(random.Random(-1), events)))
    assert len(clean["cdrs"]) == 120
    for seed in SEEDS[:4]:
        assert rows(crash(seed, events, records_ahead=False)) == clean, seed


def test_a_new_owner_supersedes_the_records_its_predecessor_sent_ahead_of_the_rows() -> None:
    events = partitions()
    clean = rows(fold(interleave(random.Random(-1), events)))
    for seed in SEEDS:
        assert rows(crash(seed, events, records_ahead=True)) == clean, seed


def test_without_the_take_over_floor_orphan_records_win(monkeypatch: Any) -> None:
    """What the floor is for (``agent_state.rebased``): numbered by the row's own count,
    some crash points leave an orphan revision standing - the CI run's 1 ms."""
    monkeypatch.setattr(agent_stats, "version_floor", lambda: 0)
    events = partitions()
    clean = rows(fold(interleave(random.Random(-1), events)))
    assert any(rows(crash(seed, events, records_ahead=True)) != clean for seed in SEEDS)
