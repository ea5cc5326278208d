"""The demo's support line on the real stack: callers wait in its queue and leave it.

``tawag up`` with demo traffic, provisioned by ``sip-edge/provisioning.example.toml`` (its
trunk ports moved into the block). A share of the demo's carrier calls dial the support
line (group ``support``, longest_idle, one desk phone, a waiting queue overflowing to the
duty manager); while the desk talks, the next caller waits. The test reads the figures
the Routing page shows (``routing.queue_summary`` over the warehouse's HTTP interface)
until a caller has entered the queue and one has left it (offered, overflowed or hung
up), and checks they agree with the raw ``route.decided`` events.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from stack_harness import example_provisioning, running_stack, stack_settings, wait_for

from core.settings import Settings
from warehouse.client import service_client
from warehouse.queries import routing

pytestmark = pytest.mark.integration

BLOCK, RTP_MIN = 24000, 35000
QUEUE_DEADLINE_S = 600
"""Demo traffic is random: the desk must be busy when the next support call comes."""



@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = stack_settings(tmp_path_factory, "demo-queue", block=BLOCK, rtp_min=RTP_MIN,
                              provisioning=example_provisioning(BLOCK))
    with running_stack(settings, demo=True):
        yield settings


def test_demo_callers_wait_in_the_support_queue_and_leave_it(stack: Settings) -> None:
    client = service_client(stack)
    start = datetime.now(UTC) - timedelta(hours=1)

    def waited_and_left() -> dict | None:
        summary = routing.queue_summary(client, stack.tenant, start,
                                        datetime.now(UTC) + timedelta(hours=1))
        rows = summary.set_index("queue").to_dict("index")
        row = rows.get("support")
        left = row and row["offered"] + row["overflowed"] + row["abandoned"]
        return row if row and row["queued"] and left else None

    row = wait_for("a demo caller queued and one out of the queue", waited_and_left,
                   QUEUE_DEADLINE_S)
    print("support queue:", row)
    events = client.query(
        "SELECT JSONExtractString(extra, 'rule') AS rule, count() AS n FROM "
        "(SELECT extra FROM tawag.call_events WHERE tenant = {tenant:String} "
        "AND type = 'route.decided' LIMIT 1 BY event_id) GROUP BY rule",
        {"tenant": stack.tenant})
    raw = {e["rule"]: int(e["n"]) for e in events}
    assert raw.get("queue_wait", 0) >= row["queued"] >= 1
    assert row["max_queue_length"] >= 1
    # max_wait_s and a tick; NaN when no caller has left after waiting yet (the one out
    # of the queue overflowed "full": it never waited, queue_summary counts no wait)
    assert math.isnan(row["wait_max_s"]) or row["wait_max_s"] <= 10 + 1
