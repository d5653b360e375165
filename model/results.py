"""What a generation returns: streamed text deltas, then one ``GenerationResult``.

Torch-free on purpose: the engine produces these, and any other chat backend (the
scripted one of the tests, a remote OpenAI-compatible server) can return the very
same objects, so agents read one shape whatever stands behind them. Knows token counts,
timings and text; nothing of models, tokenizers or tensors.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

from feldspar.model.toolcalls import ParsedTurn, parse_assistant

# The first line of a random-weight model's chat answer over HTTP: clients show content, not headers.
RANDOM_CONTENT_LABEL = "[RANDOM WEIGHTS: an untrained test model; this text is noise, not an answer]\n\n"


@dataclass
class GenerationResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of text or a stop string) or "length"
    reused_tokens: int = 0
    computed_tokens: int = 0
    restore_s: float = 0.0
    prefill_s: float = 0.0
    ttft_s: float = 0.0
    decode_s: float = 0.0
    token_ids: list[int] = field(default_factory=list, repr=False)
    estimated: bool = False  # token counts guessed (a remote server that sent no usage, no tokenizer here)

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.computed_tokens / self.prefill_s if self.prefill_s > 0 else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        steps = max(self.completion_tokens - 1, 0)
        return steps / self.decode_s if self.decode_s > 0 else 0.0

    def tool_turn(self, tools: list[dict[str, Any]] | None = None) -> ParsedTurn:
        return parse_assistant(self.text, tools)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("token_ids")
        data["prefill_tokens_per_s"] = round(self.prefill_tokens_per_s, 2)
        data["decode_tokens_per_s"] = round(self.decode_tokens_per_s, 2)
        return data


class Stream:
    """Iterate for text deltas; ``result`` is set once the iteration is exhausted."""

    def __init__(self, deltas: Iterator[str], holder: list[GenerationResult]) -> None:
        self._deltas = deltas
        self._holder = holder

    def __iter__(self) -> Iterator[str]:
        return self._deltas

    @property
    def result(self) -> GenerationResult:
        if not self._holder:
            raise RuntimeError("the stream has not finished yet")
        return self._holder[0]

    def finish(self) -> GenerationResult:
        """Consume the remaining deltas and return the result."""
        for _ in self._deltas:
            pass
        return self.result
