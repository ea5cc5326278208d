"""Entrypoint and router of the dashboards: ``streamlit run dashboards/streamlit_app.py``.

It asks who is there first (a log-in form; users in the TOML file of
:mod:`dashboards.auth`), then declares every page once, in one ``st.navigation`` call;
pages live in ``app_pages/`` (not ``pages/``, which Streamlit would auto-discover). The
logged-in :class:`~dashboards.auth.User` is kept in ``st.session_state`` (server side:
a browser cannot set it) and :mod:`dashboards.data` binds every query to its tenant.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboards import auth, data

PAGES_DIR = Path(__file__).resolve().parent / "app_pages"
PAGES = (  # file, title, icon
    ("wallboard.py", "Wallboard", ":material/monitor:"),
    ("today.py", "Today", ":material/today:"),
    ("calls.py", "Calls", ":material/call_log:"),
    ("agents.py", "Agents", ":material/support_agent:"),
    ("missed_calls.py", "Missed calls", ":material/phone_missed:"),
    ("trends.py", "Trends", ":material/trending_up:"),
    ("quality.py", "Quality", ":material/graphic_eq:"),
    ("routing.py", "Routing", ":material/alt_route:"),
    ("webhooks.py", "Webhooks", ":material/webhook:"),
    ("sql.py", "SQL", ":material/database:"),
    ("glossary.py", "Glossary", ":material/menu_book:"),
)


def login_form() -> None:
    """The log-in form; on success the user goes into the session and the app reruns."""
    st.title("Tawag")
    path = auth.users_file(data.settings())
    with st.form("login"):
        name = st.text_input("User", key="login_name")
        password = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Log in")
    if not submitted:
        return
    try:
        user = auth.authenticate(path, name, password)
    except auth.AuthError as exc:
        st.error(f"{exc}. An administrator creates it: see `python -m dashboards.auth`.")
        return
    if user is None:
        st.error("Unknown user or wrong password.")
        return
    st.session_state[data.USER_KEY] = user
    st.rerun()


def sidebar(user: auth.User) -> None:
    """Who is logged in, the administrator's tenant choice, and log-out."""
    with st.sidebar:
        st.caption(f"{user.name} · {'administrator' if user.is_admin else user.tenant}")
        if user.is_admin:
            try:
                choices = data.tenants()
            except data.WarehouseError:
                choices = []
            default = user.tenant or data.settings().tenant
            options = sorted({*choices, default})
            st.selectbox("Tenant", options, index=options.index(default),
                         key=data.ADMIN_TENANT_KEY)
        if st.button("Log out", key="logout"):
            st.session_state.clear()
            st.rerun()


# a function, so that tests and a future end-to-end run can drive the router
def run() -> None:
    """Configure the app, log the user in, then run the page chosen in the navigation."""
    st.set_page_config(page_title="Tawag", page_icon=":material/call:", layout="wide")
    user = data.current_user()
    if user is None:
        st.navigation([st.Page(login_form, title="Log in", icon=":material/login:")],
                      position="hidden").run()
        return
    sidebar(user)
    page = st.navigation([
        st.Page(PAGES_DIR / file, title=title, icon=icon, default=(file == "wallboard.py"))
        for file, title, icon in PAGES])
    page.run()


if __name__ == "__main__":
    run()
