"""The engine as a chat backend: the torch-free surface agents talk to.

agents/ never imports torch, so it reaches Granite through this duck-typed object (the
protocol is written down in agents/backend.py): ``name``, ``context_window``,
``random_weights``, ``stream_chat(messages, tools, documents, ...)`` returning a ``Stream``
of text deltas whose ``result`` is a ``GenerationResult`` (model/results.py),
``prompt_token_ids`` (the exact, neutralised ids the model would see) and
``count_tokens``. Messages are Granite/OpenAI-shaped dicts, tools OpenAI function schemas,
documents dicts; all reach the checkpoint's chat template natively. Knows the engine's
public API; nothing of langchain, graphs or the CLI.
"""

from __future__ import annotations

from typing import Any, Sequence

from feldspar.model.engine import Engine, GenerationParams
from feldspar.model.results import Stream
from feldspar.model.state_source import Progress

Message = dict[str, Any]


class LocalChatBackend:
    constrains = True  # stream_chat takes structure= (grammar-constrained decoding)

    def __init__(self, engine: Engine, progress: Progress | None = None) -> None:
        self.engine = engine
        self.progress = progress  # called with (tokens done, total) while a prompt is prefilled

    @property
    def name(self) -> str:
        return self.engine.name

    @property
    def context_window(self) -> int:
        return self.engine.context_window

    @property
    def random_weights(self) -> bool:
        return self.engine.random_weights

    def stream_chat(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]] | None = None,
                    documents: Sequence[dict[str, Any]] | None = None, *, max_new_tokens: int = 512,
                    temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None,
                    reuse: bool | None = None, stop: Sequence[str] | None = None, structure: Any = None) -> Stream:
        """Validate and render now (errors raise here), generate lazily as the stream is read.

        ``structure`` (model/structure.py) constrains the decoded text to a schema, regex,
        choice or forced tool calls."""
        params = GenerationParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
                                  reuse=reuse, stop=tuple(stop or ()), structure=structure)
        return self.engine.chat(list(messages), list(tools) if tools else None,
                                list(documents) if documents else None, params, self.progress)

    def prompt_token_ids(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]] | None = None,
                         documents: Sequence[dict[str, Any]] | None = None) -> list[int]:
        return self.engine.chat_ids(list(messages), list(tools) if tools else None,
                                    list(documents) if documents else None)

    def render(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]] | None = None,
               documents: Sequence[dict[str, Any]] | None = None) -> str:
        """The prompt as text (what ``prompt_token_ids`` decodes to)."""
        return self.engine.render(list(messages), list(tools) if tools else None, list(documents) if documents else None)

    def count_tokens(self, text: str) -> int:
        return self.engine.count_tokens(text)
