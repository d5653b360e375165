"""The Models page: the Granite 4.0 catalog, the loaded model and its state cache.

Loading the model is the user's choice here (the chat page loads it with the first
question); a model that fails to load is a message on the page and the rest of the app
keeps working. Everything comes from ``services()``.
"""

from __future__ import annotations

import streamlit as st

from feldspar.ui.context import services
from feldspar.ui.views_models import render_cache, render_catalog, render_loaded


def render() -> None:
    svc = services()
    st.title("Models")
    st.subheader("Loaded model")
    if not svc.engine_loaded and st.button("Load model", key="load-model"):
        with st.spinner(f"Loading {svc.settings.model}…"):
            try:
                svc.engine()
                st.rerun()
            except svc.user_errors:
                pass  # model_status() carries the message
    render_loaded(svc.model_status())
    st.subheader("State cache")
    render_cache(svc.cache_stats())
    st.subheader("Catalog")
    render_catalog(svc.catalog(), svc.settings.model)
