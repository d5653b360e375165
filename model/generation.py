"""Prefill, decode one token, sample: small pure functions over an explicit model state.

Contract: works on token ids and tensors with any transformers causal LM that takes a
cache (``cache=`` on transformers >= 5.24, ``past_key_values=`` before; Granite 4.0 in
practice). Knows nothing about tokenization, prompts, chat templates or where a state came from; a ``ModelState`` is a cache plus the
number of tokens it has consumed, and every function here either advances a state or
reads logits. Choosing device, dtype and compilation is the caller's business.
"""

from __future__ import annotations

import functools
import inspect
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import torch
from transformers.cache_utils import DynamicCache

from feldspar.model import decode_step, prefill_scan

ChunkCallback = Callable[["ModelState", int], None]


@dataclass
class ModelState:
    """A model's full recurrent + attention state after consuming ``length`` tokens."""

    cache: DynamicCache
    length: int = 0


@dataclass(frozen=True)
class Sampling:
    """How to pick the next token: greedy when temperature is 0."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None


def new_state(model: torch.nn.Module) -> ModelState:
    return ModelState(cache=DynamicCache(config=model.config), length=0)


def _mamba_mixers(model: torch.nn.Module) -> list[torch.nn.Module]:
    layers = getattr(getattr(model, "model", None), "layers", [])
    return [layer.mamba for layer in layers if getattr(layer, "mamba", None) is not None]


def scan_chunk_for(seq_len: int, configured: int) -> int:
    """Mamba2 scan chunk for a forward of ``seq_len`` tokens.

    The reference scan pads every forward to a multiple of its chunk; for a short
    continuation that is mostly wasted work, so use the next power of two (>= 16)
    that covers it, capped at the configured chunk. The result is mathematically the
    same for any chunk size.
    """
    chunk = 16
    while chunk < seq_len and chunk < configured:
        chunk *= 2
    return min(chunk, configured)


@contextmanager
def scan_chunking(model: torch.nn.Module, seq_len: int) -> Iterator[None]:
    mixers = _mamba_mixers(model)
    saved = [m.chunk_size for m in mixers]
    try:
        for mixer, configured in zip(mixers, saved):
            mixer.chunk_size = scan_chunk_for(seq_len, configured)
        yield
    finally:
        for mixer, configured in zip(mixers, saved):
            mixer.chunk_size = configured


@functools.lru_cache(maxsize=None)
def _cache_argument(model_class: type) -> str:
    """The keyword this model class takes its cache by: ``cache`` where transformers has
    renamed it (5.24 deprecates ``past_key_values``, 5.40 removes it), else the old name."""
    parameters = inspect.signature(model_class.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


@torch.inference_mode()
def forward(model: torch.nn.Module, state: ModelState, ids: torch.Tensor) -> torch.Tensor:
    """Feed ``ids`` (shape [1, T]) onto ``state``; return the last position's logits (fp32).
    Mamba2 mixers take model/prefill_scan.py's scan where it applies (FELDSPAR_PREFILL=ref: not)."""
    with scan_chunking(model, ids.shape[-1]), prefill_scan.active(model):
        cache = {_cache_argument(type(model)): state.cache}
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1, **cache)
    state.length += int(ids.shape[-1])
    return out.logits[0, -1].float()


def chunk_ends(start: int, end: int, chunk_size: int, stops: Iterable[int] = ()) -> list[int]:
    """End positions of prefill forwards covering [start, end): every ``chunk_size``
    tokens and also exactly at each stop (so a caller can snapshot there)."""
    cuts = {p for p in stops if start < p < end}
    pos = start
    while pos + chunk_size < end:
        pos += chunk_size
        cuts.add(pos)
    return sorted(cuts | {end}) if end > start else []


def prefill(
    model: torch.nn.Module,
    state: ModelState,
    ids: Sequence[int],
    chunk_size: int,
    stops: Iterable[int] = (),
    on_chunk: ChunkCallback | None = None,
) -> torch.Tensor:
    """Feed ``ids`` onto ``state`` in chunks; return the logits after the last token.

    ``stops`` are absolute positions (counted from the state's start) where a chunk
    must end; ``on_chunk(state, position)`` runs after every chunk.
    """
    if not ids:
        raise ValueError("prefill needs at least one token")
    device = next(model.parameters()).device
    tensor = torch.tensor([list(ids)], dtype=torch.long, device=device)
    base = state.length
    logits = None
    for end in chunk_ends(base, base + len(ids), chunk_size, stops):
        logits = forward(model, state, tensor[:, state.length - base : end - base])
        if on_chunk is not None:
            on_chunk(state, end)
    assert logits is not None
    return logits


def fast_decode_enabled() -> bool:
    """The fused step (model/decode_step.py) unless FELDSPAR_DECODE_STEP=ref asks for transformers'.

    Measured side by side (docs/benchmarks.md, "Decode step"), the fused step beats
    transformers' forward in every dtype and quantisation on h-350m (fp32 2.15x, bf16 1.78x,
    bf16 int8 1.60x, bf16 int4 2.26x on a saturated 2-core machine), so no
    case is routed to the reference by default; the switch stays for comparisons."""
    return os.environ.get("FELDSPAR_DECODE_STEP", "fast").strip().lower() != "ref"


def decode_one(model: torch.nn.Module, state: ModelState, token_id: int) -> torch.Tensor:
    """Feed one token; return the next-token logits (the fused step where it applies)."""
    if fast_decode_enabled() and decode_step.supports(model, state.cache, state.length):
        logits = decode_step.step(model, state.cache, token_id, state.cache.get_seq_length())
        state.length += 1
        return logits
    device = next(model.parameters()).device
    return forward(model, state, torch.tensor([[token_id]], dtype=torch.long, device=device))


def make_generator(sampling: Sampling, device: torch.device | str) -> torch.Generator | None:
    if sampling.temperature <= 0 or sampling.seed is None:
        return None
    return torch.Generator(device=device).manual_seed(sampling.seed)


def greedy(logits: torch.Tensor) -> int:
    """The argmax of 1-D logits, as ``torch.argmax`` picks it (the first of ties; a NaN counts as
    the largest): numpy's vectorised argmax for fp32/fp64 on the CPU (11 vs 200 us at a 100K
    vocabulary, AMD EPYC: 1 % of an int4 token), ATen's elsewhere."""
    if logits.device.type == "cpu" and logits.dtype in (torch.float32, torch.float64):
        return int(logits.detach().numpy().argmax())
    return int(torch.argmax(logits))


def sample(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None = None) -> int:
    """Pick a token id from 1-D logits: argmax, or temperature + nucleus sampling."""
    if sampling.temperature <= 0:
        return greedy(logits)
    probs = torch.softmax(logits / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < sampling.top_p
        sorted_probs = sorted_probs * keep
        choice = torch.multinomial(sorted_probs / sorted_probs.sum(), 1, generator=generator)
        return int(order[choice])
    return int(torch.multinomial(probs, 1, generator=generator))


def decode_tokens(
    model: torch.nn.Module,
    state: ModelState,
    logits: torch.Tensor,
    max_new_tokens: int,
    sampling: Sampling,
    stop_ids: frozenset[int],
    constraint=None,
) -> Iterator[int]:
    """Yield up to ``max_new_tokens`` sampled ids, starting from prefill ``logits``.

    A stop id is yielded and ends the loop without being fed to the model, so the
    state has consumed every yielded token but the last. A ``constraint`` (model/constrained.py)
    picks from the logits it masks and advances with each picked token (starting the next mask,
    which then overlaps the forward).
    """
    generator = make_generator(sampling, logits.device)
    for step in range(max_new_tokens):
        token = sample(logits, sampling, generator) if constraint is None else constraint.pick(logits, sampling, generator)
        if constraint is not None:
            constraint.advance(token)
        yield token
        if token in stop_ids or step == max_new_tokens - 1:
            return
        logits = decode_one(model, state, token)
