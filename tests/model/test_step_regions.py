"""Compiled regions called without dynamo once warm (``model.step_regions``).

A warm compiled step of a real model runs its graphs with no dynamo cache lookup at all (the
profiler's record of a step) and the same tokens; a region whose one argument structure was
served by two compiled entries (here: two dtypes) never calls either directly, so each input
still gets its own graph; a new cold step of a signature forgets what the last one learnt.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from feldspar.model import decode_step, step_regions
from feldspar.model.generation import Sampling, decode_tokens, new_state, prefill
from feldspar.model.loader import load_checkpoint

PROMPT = list(range(5, 30))


pytestmark = pytest.mark.usefixtures("eager_after")  # tests/model/conftest.py


def greedy(model, steps: int) -> list[int]:
    state = new_state(model)
    logits = prefill(model, state, PROMPT, chunk_size=16)
    return list(decode_tokens(model, state, logits, steps, Sampling(), frozenset()))


def test_a_warm_compiled_step_runs_its_graphs_without_dynamo_lookups(tiny_base_checkpoint) -> None:
    model = load_checkpoint(str(tiny_base_checkpoint), "cpu", "float32", "int8")[0]
    eager = greedy(model, 8)
    decode_step.set_compiled(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert greedy(model, 8) == eager  # compiles, learns, then runs warm
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            assert greedy(model, 8) == eager
    names = [event.name for event in prof.events()]
    assert any("CompiledFxGraph" in name for name in names)  # the compiled graphs ran
    assert not [name for name in names if "Cache Lookup" in name]


def scale(x: torch.Tensor) -> torch.Tensor:
    return x * 2 + 1


def test_a_structure_two_entries_served_is_never_called_directly() -> None:
    region = step_regions.Region("scale", scale, "eager", None, lambda: None)
    low, full = torch.arange(4, dtype=torch.bfloat16), torch.arange(4, dtype=torch.float32)
    with step_regions.stepping([region], signature=7, warm=False):
        region(low)
        region(full)  # same structure, another dtype: another compiled entry
    assert region.direct[(7, (False,))] is step_regions.AMBIGUOUS
    with step_regions.stepping([region], signature=7, warm=True):
        for x in (low, full, full.double()):
            out = region(x)
            assert out.dtype == x.dtype and torch.equal(out, x * 2 + 1)


def test_a_warm_call_runs_the_learnt_entry_and_a_cold_step_relearns() -> None:
    region = step_regions.Region("scale", scale, "eager", None, lambda: None)
    x = torch.arange(6, dtype=torch.float32)
    with step_regions.stepping([region], signature=3, warm=False):
        region(x)
    direct = region.direct[(3, (False,))]
    assert callable(direct) and direct is not step_regions.AMBIGUOUS
    with step_regions.stepping([region], signature=3, warm=True):
        assert torch.equal(region(x), x * 2 + 1)
    with step_regions.stepping([region], signature=3, warm=False):
        assert (3, (False,)) not in region.direct  # forgotten at the start of a cold step
        region(x)
    assert region.direct[(3, (False,))] is not step_regions.AMBIGUOUS  # the same entry again
