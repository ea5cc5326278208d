"""A real headless Chromium logs in, opens every page of the running app and saves a
screenshot of each (under ``var/screenshots/``, not committed).

The app is ``streamlit run`` on a test port against the known-data warehouse of
``conftest``; Chromium is driven over the DevTools protocol (:mod:`chromium`). A page
fails on a Streamlit error box or exception, or when it shows no content.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from chromium import CHROMIUM, PAGES, DevTools, chromium, stop, visit_every_page, wait_for

from core.settings import REPO_ROOT

APP_PORT = 31150
DEVTOOLS_PORT = 31151
SHOTS = REPO_ROOT / "var" / "screenshots"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium not installed")


@pytest.fixture(scope="module")
def app_url(warehouse_dir) -> Iterator[str]:
    env = {**os.environ, "TAWAG_WAREHOUSE_MODE": "embedded",
           "TAWAG_WAREHOUSE_HOST": "127.0.0.1", "TAWAG_WAREHOUSE_HTTP_PORT": "31125",
           "TAWAG_DATA_DIR": str(warehouse_dir), "TAWAG_TENANT": "acme"}
    log = (warehouse_dir / "streamlit.log").open("w")
    app = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO_ROOT / "dashboards" /
                                                       "streamlit_app.py"),
         "--server.port", str(APP_PORT), "--server.address", "127.0.0.1",
         "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{APP_PORT}/"
    try:
        wait_for(lambda: httpx.get(url + "_stcore/health").status_code == 200, 60,
                 "streamlit to be healthy")
        yield url
    finally:
        stop(app)
        log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[DevTools]:
    with chromium(tmp_path_factory.mktemp("chromium-profile"), DEVTOOLS_PORT) as tools:
        yield tools


def test_chromium_logs_in_and_every_page_renders(app_url, browser):
    texts = visit_every_page(browser, app_url, "alice", "alice-pw", SHOTS)
    assert list(texts) == PAGES
    assert all("acme" in text for text in texts.values())
