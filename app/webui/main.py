"""The Streamlit entry script behind ``feldspar ui``: settings, services, navigation.

Streamlit runs this file on every interaction. It loads Settings (the same data home and
configuration as the CLI: ``feldspar ui`` passes them through the environment), builds the
services once per server process (``st.cache_resource``), registers them for the pages
(feldspar.ui.context) and shows the navigation; the chat page opens first. Settings that
cannot be read are one message on the page. Test only: ``FELDSPAR_TEST_SCRIPTED_REPLIES``
names a JSON list of scripted Granite replies that answer the chat instead of the model
(the browser test's deterministic tool calls; the page says so).
"""

from __future__ import annotations

import streamlit as st

from feldspar.settings import SettingsError, load_settings
from feldspar.ui import page_chat, page_documents, page_models, page_packs
from feldspar.ui.context import register_services
from feldspar.webui.services import UiServices, scripted_chat_model_from_env


@st.cache_resource(show_spinner=False)
def _services() -> UiServices:
    return UiServices(load_settings(), chat_model=scripted_chat_model_from_env())


def main() -> None:
    st.set_page_config(page_title="Feldspar", layout="wide")
    try:
        register_services(_services())
    except SettingsError as exc:
        st.error(f"Feldspar cannot start: {exc}")
        st.stop()
    pages = [
        st.Page(page_chat.render, title="Chat", url_path="chat", default=True),
        st.Page(page_documents.render, title="Documents", url_path="documents"),
        st.Page(page_packs.render, title="Packs", url_path="packs"),
        st.Page(page_models.render, title="Models", url_path="models"),
    ]
    st.navigation(pages).run()


main()
