"""The engine surface of `feldspar chat` and `feldspar generate`, over a remote Granite server.

``RemoteEngine(backend)`` wraps an ``agents.remote_backend.RemoteChatBackend`` in the few
Engine methods those commands call (``chat``, ``complete``, ``fill_in_middle``, ``name``,
``is_chat``, ``random_weights``, ``context_window``, ``count_tokens``), each returning the
same ``Stream`` of text deltas and ``GenerationResult`` as the local engine, so the commands
print, save and resume conversations the same way. There is no prefill on this side, so
``progress`` is accepted and never called; ``reuse`` is the server's business (its usage
reports what it reused). Knows GenerationParams' fields; nothing of terminals.
"""

from __future__ import annotations

from typing import Any


class RemoteEngine:
    is_chat = True

    def __init__(self, backend) -> None:
        self.backend = backend

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def random_weights(self) -> bool:
        return bool(self.backend.random_weights)

    @property
    def context_window(self) -> int:
        return self.backend.context_window

    def count_tokens(self, text: str) -> int:
        return self.backend.count_tokens(text)

    @staticmethod
    def _settings(params) -> dict[str, Any]:
        return {"max_new_tokens": params.max_new_tokens, "temperature": params.temperature, "top_p": params.top_p,
                "seed": params.seed, "stop": list(getattr(params, "stop", ()) or ()) or None}

    def chat(self, messages, tools=None, documents=None, params=None, progress=None):
        return self.backend.stream_chat(list(messages), tools, documents, **self._settings(params))

    def complete(self, prompt: str, params=None, progress=None):
        return self.backend.stream_completion(prompt, **self._settings(params))

    def fill_in_middle(self, prefix: str, suffix: str, params=None, progress=None):
        return self.backend.stream_completion(prefix, suffix, **self._settings(params))
