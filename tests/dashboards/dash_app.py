"""Helpers of the dashboard tests: the app's path, the test users, and AppTest helpers
that log a user in, open a page and read what it shows. (Not in conftest.py: the
warehouse tests have a conftest module too, and ``from conftest import`` would be
ambiguous when both directories run.)"""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from dashboards import data
from dashboards.auth import ADMIN, TENANT_USER, User

APP = Path(__file__).resolve().parents[2] / "dashboards" / "streamlit_app.py"
PORT = 31125
TIMEOUT_S = 60  # the first chdb query of a process is slow
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "root": "root-pw"}
USERS = {"alice": User("alice", "acme", TENANT_USER), "bob": User("bob", "globex", TENANT_USER),
         "root": User("root", "", ADMIN)}


def open_page(page: str | None, user: str | None = "alice", **state) -> AppTest:
    """Run the app logged in as ``user`` on ``app_pages/<page>.py`` (None: the default)."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT_S)
    if user is not None:
        at.session_state[data.USER_KEY] = USERS[user]
    for key, value in state.items():
        at.session_state[key] = value
    if page is not None:
        at.switch_page(f"app_pages/{page}.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def page_text(at: AppTest) -> str:
    """Everything a person could read on the page: texts, figures and table cells."""
    parts = [str(e.value) for kind in ("title", "subheader", "caption", "markdown", "info",
                                       "warning", "error", "success")
             for e in getattr(at, kind)]
    parts += [f"{m.label}={m.value} {m.delta}" for m in at.metric]
    parts += [df.value.to_csv() for df in at.dataframe]
    return "\n".join(parts)
