"""SQL: the analysts' box. A schema browser with what each column means, and a query box
that runs one read-only SELECT on this tenant's rows, with a row limit and a timeout.

Anything else (writes, system tables, table functions, SETTINGS, several statements) is
refused with the reason; see :mod:`warehouse.queries.sql_box` for how the tenant's rows
are enforced whatever the statement says.
"""

from __future__ import annotations

import streamlit as st

from dashboards import data
from dashboards.errors import warehouse_errors

# Streamlit runs this file as a script: constants get comments, not docstrings.

EXAMPLE = ("SELECT disposition, count() AS calls\nFROM cdrs FINAL\n"
           "WHERE started_at >= today() - 7\nGROUP BY disposition\nORDER BY calls DESC")


def render() -> None:
    user = data.current_user()
    st.title("SQL")
    st.caption(f"Tenant `{data.tenant()}` · one SELECT, at most {data.SQL_ROW_LIMIT:,} rows, "
               f"{data.SQL_TIMEOUT_S} s · every table shows this tenant's rows only")
    schema_browser()
    sql = st.text_area("Query", value=EXAMPLE, height=160, key="sql_text")
    all_tenants = user is not None and user.is_admin and st.checkbox(
        "All tenants (administrator)", key="sql_all_tenants")
    if st.button("Run", key="sql_run", type="primary"):
        run(sql, all_tenants)


def schema_browser() -> None:
    # the query box below works without the column list: the page carries on after an error
    columns = None
    with warehouse_errors(stop=False):
        columns = data.schema_columns()
    if columns is None:
        return
    with st.expander("Tables and columns", expanded=False):
        for table, about in data.table_descriptions().items():
            st.markdown(f"**{table}** — {about}")
            st.dataframe(columns[columns["table"] == table].drop(columns="table"),
                         hide_index=True, width="stretch")


def run(sql: str, all_tenants: bool) -> None:
    try:
        with warehouse_errors():
            result = data.run_sql(sql, all_tenants=all_tenants)
    except data.SqlRefused as exc:  # the analyst's statement, not the warehouse
        st.error(f"Refused: {exc}")
        return
    shown = f"{len(result.frame)} rows"
    if result.truncated:
        shown += f" (stopped at the limit of {result.limit:,}: more rows exist)"
    st.caption(shown)
    st.dataframe(result.frame, hide_index=True, width="stretch")
    st.download_button("Download CSV", result.frame.to_csv(index=False).encode(),
                       file_name="query.csv", mime="text/csv", key="sql_csv")


render()
