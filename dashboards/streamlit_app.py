"""Entrypoint and router of the dashboards: ``streamlit run dashboards/streamlit_app.py``.

It declares every page once, in one ``st.navigation`` call; pages live in
``app_pages/`` (not ``pages/``, which Streamlit would auto-discover). The repository is
installed in editable mode, so ``dashboards``, ``warehouse`` and ``tawag`` import from
wherever Streamlit is started.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

PAGES_DIR = Path(__file__).resolve().parent / "app_pages"


# a function, so that tests and a future end-to-end run can drive the router
def run() -> None:
    """Configure the app, then run the page chosen in the navigation."""
    st.set_page_config(page_title="Tawag", page_icon=":material/call:", layout="wide")
    page = st.navigation([
        st.Page(PAGES_DIR / "today.py", title="Today", icon=":material/today:",
                default=True),
    ])
    page.run()


if __name__ == "__main__":
    run()
