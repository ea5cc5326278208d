"""A real headless Chromium for the dashboard tests, driven over the DevTools protocol.

Shared by the browser test of the known-data app (``tests/dashboards/test_browser.py``)
and the one of the whole stack with demo traffic (``tests/integration``). Every wait is
a poll for a condition with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import count
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PAGES = ["Wallboard", "Today", "Calls", "Agents", "Missed calls", "Trends", "Quality",
         "Routing", "Webhooks", "SQL", "Glossary"]
"""Every page of the app, by the title its navigation link ends with."""


def chromium_flags(devtools_port: int) -> list[str]:
    return ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--window-size=1600,2600",
            "--remote-debugging-address=127.0.0.1", f"--remote-debugging-port={devtools_port}"]


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


class DevTools:
    """The few DevTools calls the tests need, on one page target."""

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


@contextmanager
def chromium(profile: Path, devtools_port: int) -> Iterator[DevTools]:
    """A headless Chromium on ``devtools_port`` for the duration, stopped by PID."""
    process = subprocess.Popen([CHROMIUM, *chromium_flags(devtools_port),
                                f"--user-data-dir={profile}", "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        targets = wait_for(lambda: [t for t in httpx.get(
            f"http://127.0.0.1:{devtools_port}/json/list").json() if t["type"] == "page"],
            30, "chromium's DevTools endpoint")
        with connect(targets[0]["webSocketDebuggerUrl"], max_size=None,
                     open_timeout=10) as ws:
            tools = DevTools(ws)
            tools.call("Page.enable")
            yield tools
    finally:
        stop(process)


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


def visit_every_page(tools: DevTools, url: str, user: str, password: str,
                     shots: Path) -> dict[str, str]:
    """Log in at ``url``, open each page, save ``shots/<page>.png``; each page's text.

    Fails on a Streamlit error box or exception, or a page with no content.
    """
    shots.mkdir(parents=True, exist_ok=True)
    tools.call("Page.navigate", url=url)
    wait_for(lambda: tools.js(SET_INPUT % (json.dumps(user), json.dumps(password))),
             60, "the log-in form")
    assert tools.js(CLICK_BUTTON % json.dumps("Log in"))
    settle(tools, "Wallboard")
    texts = {}
    for title in PAGES:
        if title != "Wallboard":
            wait_for(lambda t=title: tools.js(CLICK_NAV % json.dumps(t)), 30,
                     f"the {title} link")
            settle(tools, title)
        shot = tools.call("Page.captureScreenshot", format="png")
        (shots / f"{title.lower().replace(' ', '_')}.png").write_bytes(
            base64.b64decode(shot["data"]))
        assert tools.js(PROBLEMS) == [], title
        text = tools.js(MAIN_TEXT) or ""
        assert len(text.strip()) > len(title) + 20, f"{title} page is empty: {text!r}"
        texts[title] = text
    return texts
