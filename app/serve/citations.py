"""The agent's citations in the shape OpenAI-compatible clients display: message ``annotations``.

``annotations(sources, text, base_url, store)`` turns the agent's sources into
``{"type": "url_citation", "url_citation": {"url", "title", "start_index", "end_index"}}``
entries (the shape of OpenAI's web-search citations, which Open WebUI shows as a sources
panel): the title is the file's name, its page and character span; the indices are where
the answer cites it (``[doc_id]``), or 0/0 when it is not cited inline; the url opens the
cited passage as text at ``/sources/<token>`` on this server (``SourceStore``: an
unguessable token per passage, newest ``limit`` kept in memory, so one client cannot list
another's). File names only: never a server path. Knows the agent's source dicts.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections import OrderedDict
from pathlib import PurePath
from typing import Any

SOURCES_PATH = "/sources"


class SourceStore:
    """Cited passages by token, for the links in annotations (the newest ``limit``)."""

    def __init__(self, limit: int = 5_000) -> None:
        self.limit = limit
        self._items: OrderedDict[str, str] = OrderedDict()
        self._guard = threading.Lock()

    def put(self, text: str) -> str:
        token = secrets.token_urlsafe(18)
        with self._guard:
            self._items[token] = text
            while len(self._items) > self.limit:
                self._items.popitem(last=False)
        return token

    def get(self, token: str) -> str | None:
        with self._guard:
            return self._items.get(token)


def file_name(source: dict[str, Any]) -> str:
    where = str(source.get("path") or source.get("source") or "source")
    return PurePath(where.replace("\\", "/")).name or where


def source_title(source: dict[str, Any]) -> str:
    """``[1] guide.md · p3 · chars 120-480 · Heading``: what the sources panel lists."""
    parts = [f"[{source.get('doc_id')}] {file_name(source)}"]
    if source.get("page"):
        parts.append(f"p{source['page']}")
    if source.get("start") is not None and source.get("end") is not None:
        parts.append(f"chars {source['start']}-{source['end']}")
    if source.get("heading"):
        parts.append(str(source["heading"]))
    return " · ".join(parts)


def annotations(sources: list[dict[str, Any]], text: str, base_url: str, store: SourceStore) -> list[dict[str, Any]]:
    out = []
    for source in sources:
        title = source_title(source)
        token = store.put(f"{title}\n\n{source.get('text') or ''}\n")
        found = re.search(rf"\[{re.escape(str(source.get('doc_id')))}\]", text or "")
        start, end = (found.start(), found.end()) if found else (0, 0)
        out.append({"type": "url_citation", "url_citation": {
            "url": f"{base_url.rstrip('/')}{SOURCES_PATH}/{token}", "title": title,
            "start_index": start, "end_index": end}})
    return out
