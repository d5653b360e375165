"""The UI's services: what the Streamlit pages act on, built from Settings via app/compose.py.

One ``UiServices`` per server process (cached with ``st.cache_resource`` in app/ui_main.py),
shared by every browser session: the engine and retrieval services load lazily on first use
and are shared the same way the CLI would build them. Knows compose and Settings; renders nothing.
"""

from __future__ import annotations

from functools import cached_property

from feldspar.settings import Settings


class UiServices:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def library(self):
        """Documents and packs (feldspar.ui_library.LibraryServices), built on first use."""
        from feldspar.compose import build_library

        return build_library(self.settings)
