"""Where a generation's starting state comes from: computed fresh, or resumed from a cache.

``StateSource`` is the seam between the engine and hybrid state reuse: the engine hands
over the prompt's token ids and gets back a state that has consumed all of them plus the
logits after the last one. ``FreshState`` computes everything (reuse turned off);
the prefix state cache implements the same protocol. Knows token ids and model states,
not text, chat or documents.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import torch

from feldspar.model.generation import ModelState, new_state, prefill

Progress = Callable[[int, int], None]  # (tokens done, tokens total)


@dataclass
class Prepared:
    """A state that has consumed the whole prompt, and how it was obtained."""

    state: ModelState
    logits: torch.Tensor = field(repr=False)
    reused_tokens: int
    computed_tokens: int
    restore_s: float = 0.0
    prefill_s: float = 0.0


class StateSource(Protocol):
    def prepare(
        self,
        model: torch.nn.Module,
        ids: Sequence[int],
        *,
        chunk_size: int,
        boundaries: Sequence[int] = (),
        progress: Progress | None = None,
    ) -> Prepared: ...

    def remember(self, ids: Sequence[int], state: ModelState) -> None: ...


def progress_callback(progress: Progress | None, start: int, total: int):
    """Adapt a (done, total) progress function to prefill's on_chunk hook."""
    if progress is None:
        return None
    return lambda _state, position: progress(position - start, total)


class FreshState:
    """Compute the whole prompt from an empty state every time."""

    def prepare(self, model, ids, *, chunk_size, boundaries=(), progress=None) -> Prepared:
        started = time.perf_counter()
        state = new_state(model)
        logits = prefill(model, state, ids, chunk_size, on_chunk=progress_callback(progress, 0, len(ids)))
        elapsed = time.perf_counter() - started
        return Prepared(state, logits, reused_tokens=0, computed_tokens=len(ids), prefill_s=elapsed)

    def remember(self, ids, state) -> None:
        return None
