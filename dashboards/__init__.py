"""Tawag's Streamlit dashboards: ``streamlit run dashboards/streamlit_app.py``.

``streamlit_app.py`` is the router, ``app_pages/`` lay out one page each, ``data.py`` is
the only module that talks to the warehouse, and ``formatting.py`` turns query results
into what a person reads (pure, testable without Streamlit).
"""
