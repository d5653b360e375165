"""A conversation's model state saved to disk: a new process resumes it, other models are refused."""

from __future__ import annotations

import pytest
import torch

from feldspar.model.engine import Engine, EngineOptions, GenerationParams
from feldspar.model.errors import StateError
from feldspar.model.state_source import FreshState
from feldspar.model.thread_states import (
    evict_least_recent, remove_thread_state, restore_thread_state, save_thread_state, saved_states,
)

OPTIONS = EngineOptions(device="cpu", dtype="float32", prefill_chunk=64)
FIRST = [{"role": "user", "content": "Tell me about quartz and feldspar, the two commonest minerals."}]


def load(checkpoint) -> Engine:
    return Engine.load(str(checkpoint), OPTIONS)


def follow_up(first_reply: str) -> list[dict]:
    return FIRST + [{"role": "assistant", "content": first_reply}, {"role": "user", "content": "And mica?"}]


@pytest.fixture(scope="module")
def first_turn(tiny_checkpoint, tmp_path_factory):
    """One turn run in an engine, its state saved: (states dir, reply text, prompt ids, consumed ids)."""
    engine = load(tiny_checkpoint)
    result = engine.chat(FIRST, params=GenerationParams(max_new_tokens=10)).finish()
    states = tmp_path_factory.mktemp("thread-states")
    saved = save_thread_state(engine, states, "t1", engine.last_ids, 1 << 30, engine.last_prompt_ids)
    assert [m["tokens"] for m in saved] == sorted({len(engine.last_ids), len(engine.last_prompt_ids)}, reverse=True)
    return states, result.text, list(engine.last_prompt_ids), list(engine.last_ids)


def test_a_fresh_engine_resumes_the_saved_turn_and_matches_a_from_scratch_run(first_turn, tiny_checkpoint):
    states, reply, prompt_ids, consumed = first_turn
    engine = load(tiny_checkpoint)  # a new engine: an empty cache, as in a new process
    assert restore_thread_state(engine, states, "t1") == len(consumed)
    ids = engine.encode(engine.render(follow_up(reply)))
    resumed = engine.states.prepare(engine.model, ids, chunk_size=64, boundaries=engine.boundaries(ids))
    scratch = FreshState().prepare(engine.model, ids, chunk_size=64)
    shared = next((i for i, (a, b) in enumerate(zip(consumed, ids)) if a != b), min(len(consumed), len(ids)))
    assert resumed.reused_tokens >= len(prompt_ids) and resumed.reused_tokens <= shared
    assert resumed.computed_tokens == len(ids) - resumed.reused_tokens
    torch.testing.assert_close(resumed.logits, scratch.logits, rtol=0, atol=1e-4)


def test_a_state_saved_with_another_model_is_refused(first_turn, tiny_dense_checkpoint):
    states, *_ = first_turn
    other = load(tiny_dense_checkpoint)
    with pytest.raises(StateError, match="other weights|was made"):
        restore_thread_state(other, states, "t1")


def test_nothing_saved_means_nothing_restored(tiny_checkpoint, tmp_path):
    assert restore_thread_state(load(tiny_checkpoint), tmp_path, "never-saved") == 0


def test_least_recently_used_states_are_evicted_beyond_the_budget(first_turn, tmp_path):
    import shutil

    states, *_ = first_turn
    for name in ("a", "b", "c"):
        shutil.copytree(states / "t1", tmp_path / name)
    sizes = {d.name: size for _, size, d in saved_states(tmp_path)}
    import os
    for age, name in enumerate(("b", "a", "c")):  # b oldest, then a, then c
        os.utime(tmp_path / name / "pack.json", (1000 + age, 1000 + age))
    removed = evict_least_recent(tmp_path, budget_bytes=sizes["c"] + sizes["a"], keep=("b",))
    assert removed == ["a"] and sorted(d.name for _, _, d in saved_states(tmp_path)) == ["b", "c"]
    remove_thread_state(tmp_path, "b")
    assert [d.name for _, _, d in saved_states(tmp_path)] == ["c"]
