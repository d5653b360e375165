"""The Granite engine: load a checkpoint, render prompts, stream generations.

Contract: takes messages, tools (OpenAI function schemas), documents (dicts), plain text
or FIM prefix/suffix; returns streamed text deltas and a final ``GenerationResult`` with
token counts, finish reason, timings and state-reuse statistics. The prompt is rendered by
the checkpoint's own chat template. Where the starting state comes from is a
``StateSource`` (fresh, or the hybrid prefix cache). Knows token ids, tensors, messages,
tools and documents; nothing of agents, stores or the CLI.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Sequence

import torch

from feldspar.model import prompts
from feldspar.model.detok import Detokenizer
from feldspar.model.errors import ContextOverflowError, PromptError
from feldspar.model.generation import Sampling, decode_tokens
from feldspar.model.loader import Resolved, load_checkpoint
from feldspar.model.state_source import FreshState, Progress, StateSource
from feldspar.model.toolcalls import ParsedTurn, parse_assistant


@dataclass(frozen=True)
class EngineOptions:
    device: str = "auto"
    dtype: str = "auto"
    prefill_chunk: int = 2048
    reuse: bool = True
    cache_budget_bytes: int = 2 * 1024**3
    snapshot_interval: int = 4096


@dataclass(frozen=True)
class GenerationParams:
    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    reuse: bool | None = None  # None: the engine's default

    def sampling(self) -> Sampling:
        return Sampling(temperature=self.temperature, top_p=self.top_p, seed=self.seed)


@dataclass
class GenerationResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of text) or "length"
    reused_tokens: int = 0
    computed_tokens: int = 0
    restore_s: float = 0.0
    prefill_s: float = 0.0
    ttft_s: float = 0.0
    decode_s: float = 0.0
    token_ids: list[int] = field(default_factory=list, repr=False)

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.computed_tokens / self.prefill_s if self.prefill_s > 0 else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        steps = max(self.completion_tokens - 1, 0)
        return steps / self.decode_s if self.decode_s > 0 else 0.0

    def tool_turn(self) -> ParsedTurn:
        return parse_assistant(self.text)

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


class Engine:
    def __init__(self, model: torch.nn.Module, tokenizer: Any, resolved: Resolved, options: EngineOptions) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.resolved = resolved
        self.options = options
        self.fresh = FreshState()
        self.states: StateSource = self._make_state_source(options)
        self.stop_ids = self._stop_ids()

    @classmethod
    def load(cls, name: str, options: EngineOptions | None = None) -> "Engine":
        options = options or EngineOptions()
        model, tokenizer, resolved = load_checkpoint(name, options.device, options.dtype)
        return cls(model, tokenizer, resolved, options)

    def _make_state_source(self, options: EngineOptions) -> StateSource:
        if not options.reuse:
            return self.fresh
        try:
            from feldspar.model.state_cache import PrefixStateCache
        except ImportError:
            return self.fresh
        return PrefixStateCache(budget_bytes=options.cache_budget_bytes, snapshot_interval=options.snapshot_interval)

    def _stop_ids(self) -> frozenset[int]:
        ids = {self.tokenizer.convert_tokens_to_ids(prompts.END_OF_TEXT)}
        eos = self.model.config.eos_token_id
        ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return frozenset(i for i in ids if isinstance(i, int) and i >= 0)

    # ---- facts -----------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.resolved.catalog_name or self.resolved.source

    @property
    def context_window(self) -> int:
        return int(self.model.config.max_position_embeddings)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def is_chat(self) -> bool:
        return prompts.has_chat_template(self.tokenizer)

    @property
    def random_weights(self) -> bool:
        """True for a checkpoint written with random weights (its marker file says so)."""
        from feldspar.model.checkpoint_random import is_random_checkpoint

        loaded_from = getattr(self.model.config, "_name_or_path", "") or ""
        return any(is_random_checkpoint(path) for path in
                   ([self.resolved.source] if self.resolved.local else []) + ([loaded_from] if loaded_from else []))

    # ---- prompts ---------------------------------------------------------------------
    def render(self, messages, tools=None, documents=None, add_generation_prompt: bool = True) -> str:
        return prompts.render_chat(self.tokenizer, messages, tools, documents, add_generation_prompt)

    def encode(self, text: str) -> list[int]:
        return prompts.encode(self.tokenizer, text)

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def check_fits(self, prompt_tokens: int, max_new_tokens: int) -> None:
        total = prompt_tokens + max_new_tokens
        if total > self.context_window:
            raise ContextOverflowError(
                f"prompt is {prompt_tokens} tokens + {max_new_tokens} new tokens = {total}, over the "
                f"{self.context_window}-token context window of {self.name}; shorten the prompt or lower max_new_tokens"
            )

    def boundaries(self, ids: Sequence[int]) -> list[int]:
        eot = self.tokenizer.convert_tokens_to_ids(prompts.END_OF_TEXT)
        newline = frozenset(prompts.encode(self.tokenizer, "\n"))
        return prompts.message_boundaries(ids, eot, newline)

    # ---- generation ------------------------------------------------------------------
    def chat(self, messages, tools=None, documents=None, params: GenerationParams | None = None,
             progress: Progress | None = None) -> Stream:
        return self.stream(self.render(messages, tools, documents), params, progress)

    def complete(self, text: str, params: GenerationParams | None = None, progress: Progress | None = None) -> Stream:
        return self.stream(text, params, progress)

    def fill_in_middle(self, prefix: str, suffix: str, params: GenerationParams | None = None,
                       progress: Progress | None = None) -> Stream:
        prompts.check_fim_support(self.tokenizer)
        return self.stream(prompts.fim_prompt(prefix, suffix), params, progress)

    def stream(self, prompt: str | Sequence[int], params: GenerationParams | None = None,
               progress: Progress | None = None) -> Stream:
        """Validate now (errors raise here, before any compute), generate lazily."""
        params = params or GenerationParams()
        ids = self.encode(prompt) if isinstance(prompt, str) else list(prompt)
        if not ids:
            raise PromptError("the prompt is empty")
        self.check_fits(len(ids), params.max_new_tokens)
        holder: list[GenerationResult] = []
        return Stream(self._generate(ids, params, progress, holder), holder)

    def generate(self, prompt: str | Sequence[int], params: GenerationParams | None = None) -> GenerationResult:
        return self.stream(prompt, params).finish()

    def _generate(self, ids: list[int], params: GenerationParams, progress: Progress | None,
                  holder: list[GenerationResult]) -> Iterator[str]:
        use_reuse = self.options.reuse if params.reuse is None else params.reuse
        source = self.states if use_reuse else self.fresh
        started = time.perf_counter()
        prepared = source.prepare(self.model, ids, chunk_size=self.options.prefill_chunk,
                                  boundaries=self.boundaries(ids), progress=progress)
        detok = Detokenizer(self.tokenizer)
        ttft = decode_started = None
        finish = "length"
        for token in decode_tokens(self.model, prepared.state, prepared.logits, params.max_new_tokens,
                                   params.sampling(), self.stop_ids):
            if ttft is None:
                ttft = decode_started = time.perf_counter()
            if token in self.stop_ids:
                finish = "stop"
                break
            delta = detok.push(token)
            if delta:
                yield delta
        tail = detok.flush()
        if tail:
            yield tail
        ended = time.perf_counter()
        consumed = ids + detok.ids[:-1] if finish == "length" else ids + detok.ids
        source.remember(consumed, prepared.state)
        holder.append(GenerationResult(
            text=detok.text(), prompt_tokens=len(ids), completion_tokens=len(detok.ids) + (finish == "stop"),
            finish_reason=finish, reused_tokens=prepared.reused_tokens, computed_tokens=prepared.computed_tokens,
            restore_s=prepared.restore_s, prefill_s=prepared.prefill_s,
            ttft_s=(ttft or ended) - started, decode_s=ended - (decode_started or ended), token_ids=list(detok.ids),
        ))
