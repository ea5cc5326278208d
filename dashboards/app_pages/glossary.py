"""Glossary: every KPI the pages show, what it is, which calls it counts, its source.

One place (:mod:`warehouse.queries.glossary`) defines them; the hover help of every
figure on the other pages is the same text.
"""

from __future__ import annotations

import streamlit as st

from dashboards import data
from dashboards.errors import warehouse_errors


def render() -> None:
    st.title("Glossary")
    with warehouse_errors():
        tz = data.time_zone()
    st.caption(f"Tenant `{data.tenant()}` · days, hours and intervals on every page are "
               f"{tz} (the tenant's time zone from provisioning)")
    st.dataframe(data.kpi_glossary(), hide_index=True, width="stretch")


render()
