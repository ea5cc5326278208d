"""Inputs several pages share, so each asks the same question the same way."""

from __future__ import annotations

from datetime import date, timedelta

import streamlit as st

from dashboards import data

__all__ = ["period_input"]


def period_input(key: str, tz: str, days: int = 7) -> tuple[date, date]:
    """The first and last day the user picked, in the tenant's days (``tz``); by default
    the ``days`` up to today. A range still being picked (one end) counts as that day."""
    today = data.today(tz)
    period = st.date_input(f"Period (days in {tz})", (today - timedelta(days=days - 1), today),
                           key=key)
    if isinstance(period, tuple | list) and period:
        return period[0], period[-1]
    return today, today
