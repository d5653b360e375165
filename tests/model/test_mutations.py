"""Mutation tests: inject one state-reuse bug at a time and require the suite's checks to fail.

Each case patches one function of ``feldspar.model`` (pytest's monkeypatch, undone after
the case) so that it has a realistic bug, then runs reuse tests of the suite
(test_state_cache.py, test_engine.py, test_packs.py) unchanged. Every one must fail in
its comparison with the from-scratch logits (logit_reference.SCRATCH_MESSAGE), by at least
MARGIN times the tolerance, so a bug cannot slip under the tolerance on another CPU.
The bugs: SSM state off by 0.1 %, conv state dropped, attention KV one position short (all
on restore), resuming from another prompt's snapshot, resuming one token early, prefill
chunks forgetting the SSM state, and a pack restored with its Mamba layers swapped.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers.cache_utils import LinearAttentionLayer

import feldspar.model.generation as generation
import feldspar.model.packs as packs
import feldspar.model.snapshot as snapshot
import feldspar.model.state_cache as state_cache
from feldspar.model.engine import Engine, EngineOptions
from feldspar.model.snapshot import MAMBA, LayerState

from tests.model import test_engine as engine_tests
from tests.model import test_packs as pack_tests
from tests.model import test_state_cache as cache_tests
from tests.model.logit_reference import LOGIT_TOLERANCE, SCRATCH_MESSAGE
from tests.model.state_mutations import crop_kv, off_by, swap_first_mamba_layers

MARGIN = 3  # a caught bug moves the logits at least this many tolerances


# ---- the bugs ----------------------------------------------------------------------------
def ssm_off_by_a_thousandth(monkeypatch):
    real = snapshot._restore_mamba

    def restore_mamba(layer, saved):
        if saved.first is not None:
            saved = LayerState(MAMBA, saved.first, off_by(saved.second, 1e-3))
        real(layer, saved)

    monkeypatch.setattr(snapshot, "_restore_mamba", restore_mamba)


def conv_state_dropped(monkeypatch):
    real = snapshot._restore_mamba

    def restore_mamba(layer, saved):
        if saved.first is not None:
            saved = LayerState(MAMBA, torch.zeros_like(saved.first), saved.second)
        real(layer, saved)

    monkeypatch.setattr(snapshot, "_restore_mamba", restore_mamba)


def kv_one_position_short(monkeypatch):
    real = snapshot._restore_attention
    monkeypatch.setattr(snapshot, "_restore_attention", lambda layer, saved: real(layer, crop_kv(saved)))


def match_trusts_first_token_of_each_edge(monkeypatch):
    """The prefix tree walks an edge after checking only its first token: another prompt's state."""

    def match(self, ids):
        node, pos, passed = self.root, 0, [self.root]
        while pos < len(ids):
            child = node.children.get(int(ids[pos]))
            if child is None or pos + len(child.edge) > len(ids):
                break
            node, pos = child, pos + len(child.edge)
            passed.append(node)
        return pos, passed

    monkeypatch.setattr(state_cache.PrefixTree, "match", match)


def resume_one_token_early(monkeypatch):
    """A restored state claims one token fewer than its snapshot holds (that token is fed twice)."""
    real = state_cache.restore

    def restore(saved, model):
        state = real(saved, model)
        return replace(state, length=state.length - 1) if state.length > 1 else state

    monkeypatch.setattr(state_cache, "restore", restore)


def chunks_forget_ssm_state(monkeypatch):
    """Every multi-token forward onto a non-empty state starts from a zero SSM state."""
    real = generation.forward

    def forward(model, state, ids):
        if state.length > 0 and ids.shape[-1] > 1:
            for layer in state.cache.layers:
                if isinstance(layer, LinearAttentionLayer) and layer.is_recurrent_states_initialized[0]:
                    layer.recurrent_states[0] = torch.zeros_like(layer.recurrent_states[0])
        return real(model, state, ids)

    monkeypatch.setattr(generation, "forward", forward)


def pack_layers_swapped(monkeypatch):
    real = packs.from_tensors

    def from_tensors(flat, length, kinds):
        loaded = real(flat, length, kinds)
        loaded.layers = swap_first_mamba_layers(loaded.layers)
        return loaded

    monkeypatch.setattr(packs, "from_tensors", from_tensors)


# ---- the checks that must catch them ------------------------------------------------------
class Context:
    """What a check needs: the shared tiny model, and on demand an engine of its own."""

    def __init__(self, model, checkpoint: Path, tmp_path: Path):
        self.model, self.checkpoint, self.tmp_path = model, checkpoint, tmp_path

    @property
    def engine(self) -> Engine:  # fresh: pack checks install packs into its cache
        return Engine.load(str(self.checkpoint), EngineOptions(device="cpu", dtype="float32", prefill_chunk=64))


def snapshot_reuse(ctx):
    cache_tests.test_random_prompts_and_split_points_match_from_scratch(ctx.model, 0)


def snapshot_reuse_twice(ctx):
    cache_tests.test_using_one_snapshot_twice_gives_identical_results(ctx.model)


def exact_repeat(ctx):
    cache_tests.test_an_exact_repeat_needs_no_compute_and_returns_the_same_logits(ctx.model)


def multi_turn(ctx):
    cache_tests.test_multi_turn_resumes_after_the_generated_reply(ctx.model)


def sibling_prompts(ctx):
    cache_tests.test_a_sibling_sharing_the_next_token_resumes_only_from_the_branch_point(ctx.model)


def chunked_prefill(ctx):
    engine_tests.test_chunked_prefill_equals_one_shot(ctx.engine)


def pack_from_disk(ctx):
    folder = pack_tests.write_sources(ctx.tmp_path / "docs")
    pack_tests.test_questions_against_a_loaded_pack_match_from_scratch(ctx.engine, folder, ctx.tmp_path / "packs")


CASES = [
    (ssm_off_by_a_thousandth, snapshot_reuse),
    (ssm_off_by_a_thousandth, snapshot_reuse_twice),
    (ssm_off_by_a_thousandth, multi_turn),
    (conv_state_dropped, snapshot_reuse),
    (conv_state_dropped, exact_repeat),
    (kv_one_position_short, snapshot_reuse),
    (kv_one_position_short, multi_turn),
    (match_trusts_first_token_of_each_edge, sibling_prompts),
    (resume_one_token_early, snapshot_reuse),
    (resume_one_token_early, snapshot_reuse_twice),
    (chunks_forget_ssm_state, chunked_prefill),
    (chunks_forget_ssm_state, snapshot_reuse),
    (pack_layers_swapped, pack_from_disk),
]


@pytest.mark.parametrize(("bug", "check"), CASES, ids=[f"{b.__name__}-{c.__name__}" for b, c in CASES])
def test_each_injected_bug_is_caught_by_the_from_scratch_comparison(bug, check, tiny_model, tiny_checkpoint,
                                                                   tmp_path, monkeypatch):
    context = Context(tiny_model, tiny_checkpoint, tmp_path)
    bug(monkeypatch)
    with pytest.raises(AssertionError, match=SCRATCH_MESSAGE) as caught:
        check(context)
    moved = float(re.search(r"by ([0-9.e+-]+) \(tolerance", str(caught.value)).group(1))
    assert moved >= MARGIN * LOGIT_TOLERANCE, f"{bug.__name__} caught by {check.__name__} only by {moved:.3g}"

