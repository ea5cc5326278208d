"""The dashboards on the real stack with demo traffic, as an operator first sees them.

The stack ``tawag up`` starts (Kafka, rtpengine, Kamailio, ingest, streams, warehouse,
Streamlit) runs on a port block of its own, with the demo's sipp calls flowing through
the edge as provisioned by ``sip-edge/provisioning.example.toml`` (its trunk ports moved
into the block). Once the warehouse holds closed demo calls, a real headless Chromium logs
in as the administrator, opens every page and saves a screenshot of each (under
``var/screenshots/stack/``, not committed). A page fails on a Streamlit error box or
exception, or when it is empty; the Calls page must count at least the closed calls the
warehouse held before the browser opened it (the demo keeps calling meanwhile).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from stack_harness import example_provisioning, running_stack, stack_settings

from core.settings import REPO_ROOT, Settings
from dashboards.auth import ADMIN, hash_password
from warehouse.client import HttpClient, service_client

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dashboards"))
from chromium import CHROMIUM, PAGES, chromium, visit_every_page, wait_for  # noqa: E402

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium not installed")]

BLOCK = 22000
DEVTOOLS_PORT = BLOCK + 151
ADMIN_PASSWORD = "demo-admin-pw"
CLOSED_CALLS = 6
"""Closed demo calls to wait for: enough for every outcome page to have rows."""
DEMO_DEADLINE_S = 240
SHOTS = REPO_ROOT / "var" / "screenshots" / "stack"



@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = stack_settings(tmp_path_factory, "dash", block=BLOCK, rtp_min=37000,
                              provisioning=example_provisioning(BLOCK))
    settings.dashboard_users_file.write_text(
        f'[users.admin]\ntenant = "{settings.tenant}"\nrole = "{ADMIN}"\n'
        f'password = "{hash_password(ADMIN_PASSWORD)}"\n')
    with running_stack(settings, demo=True):
        yield settings


def closed_calls(client: HttpClient) -> dict[str, int]:
    rows = client.query("SELECT disposition, count() AS n FROM tawag.cdrs FINAL "
                        "WHERE closed GROUP BY disposition")
    return {row["disposition"]: int(row["n"]) for row in rows}


def test_every_page_renders_the_demo_traffic_in_chromium(stack, tmp_path):
    client = service_client(stack)

    def enough() -> dict[str, int] | None:
        closed = closed_calls(client)
        return closed if sum(closed.values()) >= CLOSED_CALLS and closed.get("answered") \
            else None

    seen = wait_for(enough, DEMO_DEADLINE_S, f"{CLOSED_CALLS} closed demo calls, one answered")
    with chromium(tmp_path / "profile", DEVTOOLS_PORT) as tools:
        texts = visit_every_page(tools, f"http://127.0.0.1:{stack.dashboard_port}/",
                                 "admin", ADMIN_PASSWORD, SHOTS)
    assert list(texts) == PAGES
    listed = re.search(r"(\d+) calls", texts["Calls"])
    assert listed and int(listed.group(1)) >= sum(seen.values()), texts["Calls"][:400]
    assert all(stack.tenant in text for text in texts.values())
