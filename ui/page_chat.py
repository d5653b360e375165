"""The chat page (being built)."""

from __future__ import annotations

import streamlit as st

from feldspar.ui.context import services


def render() -> None:
    services()
    st.title("Chat")
