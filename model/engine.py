"""The Granite engine: load a checkpoint, render prompts, stream generations.

Contract: takes messages, tools (OpenAI function schemas), documents (dicts), plain text
or FIM prefix/suffix; returns streamed text deltas and a final ``GenerationResult`` with
token counts, finish reason, timings and state-reuse statistics. The prompt is rendered by
the checkpoint's own chat template and encoded so that control-token strings inside
messages, tools, documents and FIM prefix/suffix stay plain text (``chat_ids``, ``fill_in_middle``). Where the starting state
comes from is a ``StateSource`` (fresh, or the hybrid prefix cache; ``use_states`` installs
one, e.g. a cache holding a state pack, and makes it the default even when reuse was off). Knows token ids, tensors, messages,
tools and documents; nothing of agents, stores or the CLI.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Iterator, Sequence

import torch

from feldspar.model import decode_step, prefill_scan, prompts
from feldspar.model.detok import Detokenizer
from feldspar.model.errors import ContextOverflowError, PromptError
from feldspar.model.generation import Sampling, decode_tokens
from feldspar.model.loader import Resolved, compile_choice, compiles_scan, load_checkpoint
from feldspar.model.results import GenerationResult, Stream
from feldspar.model.state_source import FreshState, Progress, StateSource
from feldspar.model.stop_flag import check_stop
from feldspar.model.stops import StopScanner
from feldspar.model.text_checks import check_token_ids

__all__ = ["Engine", "EngineOptions", "GenerationParams", "GenerationResult", "Stream"]


@dataclass(frozen=True)
class EngineOptions:
    device: str = "auto"
    dtype: str = "auto"
    quant: str = "none"  # none | int8 | int4 | auto (model/quant.py)
    # auto | on | off: torch.compile the decode step (loader.compile_choice); "on" the prefill scan too
    # (model/prefill_scan.py: ~20 s to compile on a first prefill, 1.10-1.17x each one after)
    compile: str = "off"
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
    stop: tuple[str, ...] = ()  # stop strings: the text ends before the first one
    structure: Any = None  # a model.structure.Structure the output must have (model/constrained.py)

    def sampling(self) -> Sampling:
        return Sampling(temperature=self.temperature, top_p=self.top_p, seed=self.seed)


class Engine:
    def __init__(self, model: torch.nn.Module, tokenizer: Any, resolved: Resolved, options: EngineOptions) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.resolved = resolved
        self.options = options
        self.fresh = FreshState()
        self.states: StateSource = self._make_state_source(options)
        self.stop_ids = self._stop_ids()
        self.last_prompt_ids: list[int] = []
        self.last_ids: list[int] = []

    @classmethod
    def load(cls, name: str, options: EngineOptions | None = None) -> "Engine":
        options = options or EngineOptions()
        model, tokenizer, resolved = load_checkpoint(name, options.device, options.dtype, options.quant)
        enabled, why = compile_choice(options.compile, next(model.parameters()).device)
        decode_step.set_compiled(enabled)
        scan = compiles_scan(options.compile, enabled)
        prefill_scan.set_compiled(scan)
        model.feldspar_choice.update(compile="on" if enabled else "off", compile_reason=why,
                                     compile_prefill="on" if scan else "off")
        return cls(model, tokenizer, resolved, options)

    def _make_state_source(self, options: EngineOptions) -> StateSource:
        if not options.reuse:
            return self.fresh
        from feldspar.model.state_cache import PrefixStateCache

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
    def vocab_size(self) -> int:
        """Ids the model can embed: ``0..vocab_size-1``."""
        return int(self.model.get_input_embeddings().num_embeddings)

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

    # ---- where states come from ----------------------------------------------------
    def use_states(self, source: StateSource) -> None:
        """Make ``source`` the engine's state source *and* its default, even if reuse was off.

        Installing a state (a pack) is an explicit request to resume from it; a per-call
        ``GenerationParams(reuse=False)`` still computes everything fresh.
        """
        self.states = source
        if not self.options.reuse:
            self.options = replace(self.options, reuse=True)

    # ---- prompts ---------------------------------------------------------------------
    def render(self, messages, tools=None, documents=None, add_generation_prompt: bool = True) -> str:
        return prompts.render_chat(self.tokenizer, messages, tools, documents, add_generation_prompt)

    def chat_ids(self, messages, tools=None, documents=None, add_generation_prompt: bool = True) -> list[int]:
        """The exact prompt ids of a chat; control strings inside the data stay plain text."""
        return prompts.chat_token_ids(self.tokenizer, messages, tools, documents, add_generation_prompt)

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` as written: control-token strings in it become control tokens."""
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
        return self.stream(self.chat_ids(messages, tools, documents), params, progress)

    def complete(self, text: str, params: GenerationParams | None = None, progress: Progress | None = None) -> Stream:
        return self.stream(text, params, progress)

    def fill_in_middle(self, prefix: str, suffix: str, params: GenerationParams | None = None,
                       progress: Progress | None = None) -> Stream:
        """Generate the middle between ``prefix`` and ``suffix``; control strings in them stay text."""
        return self.stream(prompts.fim_ids(self.tokenizer, prefix, suffix), params, progress)

    def stream(self, prompt: str | Sequence[int], params: GenerationParams | None = None,
               progress: Progress | None = None) -> Stream:
        """Validate now (errors raise here, before any compute), generate lazily."""
        params = params or GenerationParams()
        ids = self.encode(prompt) if isinstance(prompt, str) else list(prompt)
        check_token_ids(ids, self.vocab_size)
        if not ids:
            raise PromptError("the prompt is empty")
        self.check_fits(len(ids), params.max_new_tokens)
        self.constraint(params)  # a structure that cannot compile raises here, before any compute
        holder: list[GenerationResult] = []
        return Stream(self._generate(ids, params, progress, holder), holder)

    def constraint(self, params: GenerationParams):
        if params.structure is None:
            return None
        from feldspar.model.constrained import constraint_for

        return constraint_for(self.tokenizer, params.structure, self.model.config.vocab_size, params.max_new_tokens)

    def generate(self, prompt: str | Sequence[int], params: GenerationParams | None = None) -> GenerationResult:
        return self.stream(prompt, params).finish()

    def _generate(self, ids: list[int], params: GenerationParams, progress: Progress | None,
                  holder: list[GenerationResult]) -> Iterator[str]:
        use_reuse = self.options.reuse if params.reuse is None else params.reuse
        source = self.states if use_reuse else self.fresh
        started = time.perf_counter()
        check_stop()
        prepared = source.prepare(self.model, ids, chunk_size=self.options.prefill_chunk,
                                  boundaries=self.boundaries(ids), progress=stoppable(progress))
        detok = Detokenizer(self.tokenizer)
        stops = StopScanner(params.stop)
        ttft = decode_started = None
        finish = "length"
        constraint = self.constraint(params)
        for token in decode_tokens(self.model, prepared.state, prepared.logits, params.max_new_tokens,
                                   params.sampling(), self.stop_ids, constraint):
            check_stop()  # Ctrl-C (model/stop_flag.py) ends the call here, between tokens
            if ttft is None:
                ttft = decode_started = time.perf_counter()
            if token in self.stop_ids:
                finish = "stop"
                break
            delta = stops.push(detok.push(token))
            if delta:
                yield delta
            if stops.stopped:
                break
        tail = "" if stops.stopped else stops.push(detok.flush()) + stops.flush()
        if tail:
            yield tail
        ended = time.perf_counter()
        fed_all = finish == "stop" and not stops.stopped  # the last yielded token is fed only when it was not the end
        consumed = ids + detok.ids if fed_all else ids + detok.ids[:-1]
        source.remember(consumed, prepared.state)
        self.last_prompt_ids, self.last_ids = ids, consumed  # what a saved conversation covers (model/thread_states.py)
        holder.append(GenerationResult(
            text=stops.text(), prompt_tokens=len(ids),
            completion_tokens=len(detok.ids) + (finish == "stop" and not stops.stopped),
            finish_reason="stop" if stops.stopped else finish, reused_tokens=prepared.reused_tokens,
            computed_tokens=prepared.computed_tokens, restore_s=prepared.restore_s, prefill_s=prepared.prefill_s,
            ttft_s=(ttft or ended) - started, decode_s=ended - (decode_started or ended), token_ids=list(detok.ids),
        ))


def stoppable(progress: Progress | None) -> Progress:
    """``progress`` that first checks the stop flag, so a long prefill stops between chunks."""

    def report(done: int, total: int) -> None:
        check_stop()
        if progress is not None:
            progress(done, total)

    return report
