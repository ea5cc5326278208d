"""The Routing page's waiting-queue section, by AppTest against the known data plus the
queue decisions below (``route.decided``, loaded through the real loader; one step
delivered twice). The page without any queue decision is in test_pages.py.

    call  tenant  queue     rule            minutes ago  position  wait_ms  inputs
    qa    acme    support   queue_wait      50           1
    qa    acme    support   queue_offer     49.8         1         12000    (twice)
    qb    acme    support   queue_wait      48           2
    qb    acme    support   queue_abandon   47.5         2         30000
    qc    acme    support   queue_overflow  47           3         0        reason=full
    qd    acme    billing   queue_wait      40           1
    qd    acme    billing   queue_overflow  39           1         60000    reason=timeout
    qg    globex  gx-queue  queue_wait      45           4
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import dash_known_data as known
import pytest
from dash_app import metrics, open_page, page_text

from core.events import Direction, Event, EventType, to_json
from core.settings import Settings
from dashboards import data
from warehouse.client import ChdbClient
from warehouse.loader import Loader, Record, routes_for

pytestmark = pytest.mark.usefixtures("app_env")


def step(call_id: str, n: int, minutes_ago: float, rule: str, queue: str, position: int,
         wait_ms: int | None = None, inputs: str | None = None,
         tenant: str = "acme") -> Event:
    extra = {"rule": rule, "target": f"group:{queue}", "default_target": f"group:{queue}",
             "decision_us": 60, "position": position}
    extra |= {k: v for k, v in (("wait_ms", wait_ms), ("inputs", inputs)) if v is not None}
    return Event(event_id=f"{call_id}-q{n}", type=EventType.ROUTE_DECIDED, tenant=tenant,
                 ts=known.NOW - timedelta(minutes=minutes_ago), source="kamailio@test",
                 call_id=call_id, leg_id=call_id, direction=Direction.INBOUND,
                 caller="+79160000071", callee="+74951230200", did="+74951230200",
                 extra=extra)


def queue_steps() -> list[Event]:
    offer = step("qa", 2, 49.8, "queue_offer", "support", 1, 12_000, "idle_since=1")
    return [step("qa", 1, 50, "queue_wait", "support", 1), offer, offer,
            step("qb", 1, 48, "queue_wait", "support", 2),
            step("qb", 2, 47.5, "queue_abandon", "support", 2, 30_000,
                 "reason=caller_hung_up"),
            step("qc", 1, 47, "queue_overflow", "support", 3, 0, "reason=full"),
            step("qd", 1, 40, "queue_wait", "billing", 1),
            step("qd", 2, 39, "queue_overflow", "billing", 1, 60_000, "reason=timeout"),
            step("qg", 1, 45, "queue_wait", "gx-queue", 4, tenant="globex")]


@pytest.fixture(scope="module")
def warehouse_dir(warehouse_dir: Path) -> Iterator[Path]:
    """The known data, and the queue decisions above loaded beside it (a second session
    on the served store: one process may hold several)."""
    settings = Settings()
    store = ChdbClient(warehouse_dir / "chdb")
    try:
        Loader(store, routes_for(settings), lambda dead: None).load(
            [Record(settings.topic_call_events, 1, i, to_json(e))
             for i, e in enumerate(queue_steps())])
    finally:
        store.close()
    yield warehouse_dir


def test_the_waiting_queue_shows_the_busiest_queues_figures():
    at = open_page("routing")
    shown = metrics(at)
    # support: qa and qb queued (qc found it full), qa offered once though delivered
    # twice; waits of those who left: 12 s and 30 s -> p90 = 12 + 0.9 * 18
    assert {k: shown[k] for k in ("Queued", "Answered from queue", "Overflowed", "Abandoned",
                                  "Wait p90")} == {
        "Queued": "2", "Answered from queue": "1", "Overflowed": "1", "Abandoned": "1",
        "Wait p90": "28.2 s"}
    assert "overflowed (1 full)" in page_text(at)
    assert len(at.get("arrow_vega_lite_chart") or at.get("vega_lite_chart")) == 1
    [_, queues] = at.dataframe
    assert list(queues.value["queue"]) == ["support", "billing"]
    assert not at.info


def test_another_queue_is_one_choice_away():
    at = open_page("routing")
    at.selectbox(key="routing_queue").select("billing").run()
    shown = metrics(at)
    assert (shown["Queued"], shown["Answered from queue"], shown["Overflowed"],
            shown["Wait p90"]) == ("1", "0", "1", "60.0 s")
    assert "overflowed (1 timeout)" in page_text(at)


def test_each_tenant_sees_only_its_own_queues():
    assert "gx-queue" not in page_text(open_page("routing", "alice"))
    bob = open_page("routing", "bob")
    assert metrics(bob)["Queued"] == "1" and metrics(bob)["Wait p90"] == "—"
    assert not {"support", "billing"} & set(bob.dataframe[-1].value["queue"])


def test_the_queue_figures_are_named_queries_defined_once_by_the_library():
    """The seam runs them for the session's tenant; the hover help is the query's own
    definition (its docstring), as for the rule hits."""
    assert {"routing.queue_summary", "routing.queue_intervals"} <= set(data.QUERIES)
    definition = data.definition("routing.queue_summary")
    assert definition.startswith("Per waiting queue in ``[start, end)``: callers queued, "
                                 "offered to an agent (the queue's answers), overflowed")
    assert open_page("routing").subheader[0].help == definition
