"""A real headless Chromium logs in, opens every page of the running app and saves a
screenshot of each (under ``var/screenshots/``, not committed).

The app is ``streamlit run`` on a test port against the known-data warehouse of
``conftest``; Chromium is driven over the DevTools protocol (``websockets``). A page
fails on a Streamlit error box or exception, or when it shows no content. Every wait
is a poll for a condition with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from itertools import count
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from tawag.settings import REPO_ROOT

APP_PORT = 48150
DEVTOOLS_PORT = 48151
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = REPO_ROOT / "var" / "screenshots"
PAGES = ["Wallboard", "Today", "Calls", "Agents", "Missed calls", "Trends", "Quality", "SQL"]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  "--window-size=1600,1200", "--remote-debugging-address=127.0.0.1",
                  f"--remote-debugging-port={DEVTOOLS_PORT}"]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium not installed")


def wait_for(check: Callable[[], object], timeout: float, what: str) -> object:
    """Poll ``check`` until it returns something truthy, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
        except (httpx.HTTPError, OSError):
            result = None
        if result:
            return result
        time.sleep(0.2)  # polling interval, not a wait for an event
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def app_url(warehouse_dir) -> Iterator[str]:
    env = {**os.environ, "TAWAG_WAREHOUSE_MODE": "embedded",
           "TAWAG_WAREHOUSE_HOST": "127.0.0.1", "TAWAG_WAREHOUSE_HTTP_PORT": "48125",
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


class DevTools:
    """The few DevTools calls the test needs, on one page target."""

    def __init__(self, ws) -> None:
        self._ws = ws
        self._ids = count(1)

    def call(self, method: str, **params: object) -> dict:
        call_id = next(self._ids)
        self._ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv(timeout=30))
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def js(self, expression: str) -> object:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        return result["result"].get("value")


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[DevTools]:
    profile = tmp_path_factory.mktemp("chromium-profile")
    chromium = subprocess.Popen([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                 "about:blank"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    try:
        targets = wait_for(lambda: [t for t in httpx.get(
            f"http://127.0.0.1:{DEVTOOLS_PORT}/json/list").json() if t["type"] == "page"],
            30, "chromium's DevTools endpoint")
        with connect(targets[0]["webSocketDebuggerUrl"], max_size=None,
                     open_timeout=10) as ws:
            tools = DevTools(ws)
            tools.call("Page.enable")
            yield tools
    finally:
        stop(chromium)


SET_INPUT = """(() => {
  const setter = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;
  const inputs = document.querySelectorAll('input');
  if (inputs.length < 2) return false;
  [[0, %s], [1, %s]].forEach(([i, v]) => {
    setter.call(inputs[i], v);
    inputs[i].dispatchEvent(new Event('input', {bubbles: true}));
  });
  return true;
})()"""
CLICK_BUTTON = """(() => {
  const b = [...document.querySelectorAll('button')].find(x => x.innerText.trim() === %s);
  if (!b) return false; b.click(); return true;
})()"""
CLICK_NAV = """(() => {
  const a = [...document.querySelectorAll('a[data-testid="stSidebarNavLink"]')]
    .find(x => x.innerText.trim().endsWith(%s));
  if (!a) return false; a.click(); return true;
})()"""
IDLE_ON = """(() => {
  const app = document.querySelector('[data-testid="stApp"]');
  const h1 = document.querySelector('[data-testid="stMain"] h1');
  return !!app && app.getAttribute('data-test-script-state') === 'notRunning'
    && !!h1 && h1.innerText.trim() === %s
    && !document.querySelector('[data-testid="stSkeleton"], [data-testid="stSkeletonElement"]');
})()"""
PROBLEMS = """(() => [...document.querySelectorAll(
  '[data-testid="stException"], [data-testid="stAlertContentError"]')]
  .map(e => e.innerText.slice(0, 300)))()"""
MAIN_TEXT = """document.querySelector('[data-testid="stMain"]').innerText"""


def settle(tools: DevTools, title: str) -> None:
    """Wait until the page titled ``title`` is shown and its script has finished."""
    wait_for(lambda: tools.js(IDLE_ON % json.dumps(title)), 60, f"the {title} page")


def test_chromium_logs_in_and_every_page_renders(app_url, browser):
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.call("Page.navigate", url=app_url)
    wait_for(lambda: browser.js(SET_INPUT % (json.dumps("alice"), json.dumps("alice-pw"))),
             60, "the log-in form")
    assert browser.js(CLICK_BUTTON % json.dumps("Log in"))
    settle(browser, "Wallboard")
    for title in PAGES:
        if title != "Wallboard":
            wait_for(lambda t=title: browser.js(CLICK_NAV % json.dumps(t)), 30,
                     f"the {title} link")
            settle(browser, title)
        shot = browser.call("Page.captureScreenshot", format="png")
        path = SHOTS / f"{title.lower().replace(' ', '_')}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        assert browser.js(PROBLEMS) == [], title
        text = browser.js(MAIN_TEXT) or ""
        assert len(text.strip()) > len(title) + 20, f"{title} page is empty: {text!r}"
        assert "acme" in text
