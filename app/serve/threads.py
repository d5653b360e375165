"""Whose thread a `feldspar-agent` request continues: threads are private to the client that made them.

Clients such as Open WebUI send the whole history with every request and no ``thread_id``.
``Conversations`` finds the thread such a history continues, under three rules:

- **the principal**: a thread is continued only by the principal that created it: the API key
  the request presented (``FELDSPAR_API_KEY`` may list several, one per client) together with
  a per-user header a proxy forwards (``X-Feldspar-User``, or Open WebUI's
  ``X-OpenWebUI-User-Id`` when it runs with ``ENABLE_FORWARD_USER_INFO_HEADERS``); with no
  key and no header every client is the same anonymous principal;
- **the exact history**: the whole history the client sent (every message, system and tool
  messages too, and every assistant reply as the server sent it; text compared up to
  whitespace) must be the thread's latest state: a thread that has grown past what this client
  sent (another client continued it) is never continued, nor is a history two threads share
  (two clients whose identical first exchange got the identical reply): those start afresh;
- **an explicit ``thread_id``** is honoured only for its owner; a thread this server did not
  create (the CLI's, or one from before a restart) is continued by whoever knows its id.

Only the mapping lives here (in memory, the newest ``limit`` threads); the messages,
summaries, citations and traces stay in the thread store, per thread. Model *state* is shared
between identical token prefixes by the engine's cache, which holds no text of its own.
Knows message dicts and header values; nothing of HTTP frameworks or agents.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from typing import Any, Iterable, Mapping

USER_HEADERS = ("x-feldspar-user", "x-openwebui-user-id")
_SHARED = "shared"  # a history two threads have: continues neither

Target = tuple[str | None, str | None]


def principal_of(headers: Mapping[str, str], authenticated: bool) -> str:
    """A stable, secret-free name of who sent a request: its API key (when the server checks keys)
    and its forwarded user id."""
    key = headers.get("authorization", "") if authenticated else ""
    user = next((headers[h] for h in USER_HEADERS if headers.get(h)), "")
    return hashlib.sha256(json.dumps([key, user]).encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return " ".join(text.split())


def history_key(principal: str, target: Target, messages: Iterable[Mapping[str, Any]]) -> str:
    turns = [[m.get("role"), _text(m.get("content") or ""), _text(m.get("tool_calls") or ""),
              m.get("tool_call_id") or "", m.get("name") or ""] for m in messages]
    blob = json.dumps([principal, list(target), turns], ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()


class Conversations:
    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._by_history: dict[str, str] = {}
        self._latest: OrderedDict[str, set[str]] = OrderedDict()  # thread -> keys of its latest history
        self._owner: dict[str, str] = {}
        self._guard = threading.Lock()

    def may_continue(self, principal: str, thread_id: str) -> bool:
        with self._guard:
            owner = self._owner.get(thread_id)
        return owner is None or owner == principal

    def thread_of(self, principal: str, target: Target, earlier: list[dict[str, Any]]) -> str | None:
        """The thread whose latest history is exactly ``earlier`` and whose owner is ``principal``."""
        if not any(m.get("role") == "assistant" for m in earlier):
            return None
        key = history_key(principal, target, earlier)
        with self._guard:
            thread = self._by_history.get(key)
            if thread in (None, _SHARED) or key not in self._latest.get(thread, ()):
                return None
            return thread if self._owner.get(thread) == principal else None

    def remember(self, principal: str, target: Target, histories: Iterable[list[dict[str, Any]]],
                 thread: str) -> None:
        """``thread`` now stands at each of ``histories`` (the answer as streamed, and as sent whole)."""
        keys = {history_key(principal, target, history) for history in histories}
        with self._guard:
            self._owner.setdefault(thread, principal)
            for old in self._latest.pop(thread, set()):
                if self._by_history.get(old) == thread:
                    del self._by_history[old]
            for key in keys:
                known = self._by_history.get(key)
                self._by_history[key] = thread if known in (None, thread) else _SHARED
            self._latest[thread] = keys
            while len(self._latest) > self.limit:
                gone, old_keys = self._latest.popitem(last=False)
                self._owner.pop(gone, None)
                for old in old_keys:
                    if self._by_history.get(old) == gone:
                        del self._by_history[old]
