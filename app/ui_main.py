"""The Streamlit entry script behind ``feldspar ui``: settings, services, navigation.

Streamlit runs this file on every interaction. It loads Settings (the same data home and
configuration as the CLI: ``feldspar ui`` passes them through the environment), builds the
services once per server process (``st.cache_resource``), registers them for the pages
(feldspar.ui.context) and shows the navigation; the chat page opens first.
"""

from __future__ import annotations

import streamlit as st

from feldspar.settings import load_settings
from feldspar.ui import page_chat, page_documents, page_models, page_packs
from feldspar.ui.context import register_services
from feldspar.ui_services import UiServices


@st.cache_resource(show_spinner=False)
def _services() -> UiServices:
    return UiServices(load_settings())


def main() -> None:
    st.set_page_config(page_title="Feldspar", layout="wide")
    register_services(_services())
    pages = [
        st.Page(page_chat.render, title="Chat", url_path="chat", default=True),
        st.Page(page_documents.render, title="Documents", url_path="documents"),
        st.Page(page_packs.render, title="Packs", url_path="packs"),
        st.Page(page_models.render, title="Models", url_path="models"),
    ]
    st.navigation(pages).run()


main()
