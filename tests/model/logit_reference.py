"""From-scratch reference logits and the one tolerance every state-reuse test compares with.

Every reuse path (chunked prefill, snapshot restore, exact repeat, multi-turn, packs in
memory or from disk, thread state on disk) must give the logits that one plain forward of
the same token ids gives with no cache at all. ``logits_from_scratch`` is that reference:
a single ``model(input_ids, use_cache=False)`` call, so it shares no code with
``feldspar.model`` (no prefill, no chunking, no DynamicCache, no snapshots).

``LOGIT_TOLERANCE`` is an absolute bound on the largest logit difference. On the sensitive
tiny miniature (fp32, logits up to ~20) clean reuse runs differ from the reference by at
most 4.1e-5 (the noise floor over 1,000 random comparisons: chunked, token-by-token,
resumed and decoded; median 1.0e-5), 24x under the tolerance. Dropping any part of the
state or resuming one token off moves the logits thousands of times the tolerance; an
error of 0.1 % in every element of one part about 5-18x (docs/testing.md,
tests/model/test_sensitivity.py, tests/model/test_mutations.py).

Set FELDSPAR_LOGIT_DIFF_LOG to a file path to append every compared difference to it (how
the noise floor is re-measured). Knows models, token ids and tensors; nothing of the cache.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch

LOGIT_TOLERANCE = 1e-3
SCRATCH_MESSAGE = "differ from the from-scratch reference"


@torch.inference_mode()
def logits_from_scratch(model: torch.nn.Module, ids: Sequence[int]) -> torch.Tensor:
    """Next-token logits after ``ids``: one uncached forward of the whole sequence (fp32)."""
    device = next(model.parameters()).device
    tensor = torch.tensor([list(ids)], dtype=torch.long, device=device)
    out = model(input_ids=tensor, use_cache=False, logits_to_keep=1)
    return out.logits[0, -1].float()


def logit_difference(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest absolute difference between two logit vectors."""
    return (actual.detach().float().cpu() - expected.detach().float().cpu()).abs().max().item()


def assert_logits_close(actual: torch.Tensor, expected: torch.Tensor, what: str = "logits",
                        tolerance: float = LOGIT_TOLERANCE) -> float:
    """Fail unless every logit is within ``tolerance`` of the reference; return the difference."""
    diff = logit_difference(actual, expected)
    _log(what, diff)
    assert diff <= tolerance, f"{what} {SCRATCH_MESSAGE} by {diff:.3g} (tolerance {tolerance:g})"
    return diff


def assert_matches_scratch(model: torch.nn.Module, ids: Sequence[int], logits: torch.Tensor,
                           what: str = "logits") -> float:
    """``logits`` (computed with any reuse) equal the from-scratch logits of ``ids``."""
    return assert_logits_close(logits, logits_from_scratch(model, ids), what)


@torch.inference_mode()
def continue_greedily(model: torch.nn.Module, state, logits: torch.Tensor, steps: int) -> tuple[list[int], torch.Tensor]:
    """Greedy ids for ``steps`` tokens from a state and its logits, decoding one token at a time.

    Returns the ids and the logits after feeding all ids but the last (``steps - 1`` decodes),
    so the caller can compare them with ``logits_from_scratch(ids_so_far + tokens[:-1])``.
    """
    from feldspar.model.generation import decode_one

    tokens = [int(torch.argmax(logits))]
    for _ in range(steps - 1):
        logits = decode_one(model, state, tokens[-1])
        tokens.append(int(torch.argmax(logits)))
    return tokens, logits


def assert_reuse_matches_scratch(model: torch.nn.Module, ids: Sequence[int], state, logits: torch.Tensor,
                                 steps: int = 4, what: str = "reused") -> list[int]:
    """A prepared (state, logits) after ``ids`` matches from-scratch, and so does decoding on it.

    Checks the logits after ``ids`` and the logits after ``steps - 1`` greedy decode steps on
    the state; returns the greedy ids.
    """
    ids = list(ids)
    assert_matches_scratch(model, ids, logits, f"{what} logits after {len(ids)} tokens")
    tokens, last = continue_greedily(model, state, logits, steps)
    assert_matches_scratch(model, ids + tokens[:-1], last, f"{what} logits after {steps - 1} decode steps")
    return tokens


def _log(what: str, diff: float) -> None:
    path = os.environ.get("FELDSPAR_LOGIT_DIFF_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(f"{diff:.6e}\t{what}\n")
