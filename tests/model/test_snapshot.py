"""Snapshots of a hybrid state: exact restore, immutability, sizes, flat tensors, KV sharing."""

from __future__ import annotations

import pytest
import torch

from feldspar.model.errors import StateError
from feldspar.model.generation import decode_one, new_state, prefill
from feldspar.model.snapshot import (
    ATTENTION, MAMBA, detach_kv, from_tensors, layer_kinds, restore, share_kv_prefix, state_bytes,
    storage_bytes, take_snapshot, to_tensors,
)

from tests.model.logit_reference import assert_matches_scratch


@pytest.fixture(scope="module")
def model(tiny_model):
    return tiny_model


def random_ids(model, count: int, seed: int) -> list[int]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.config.vocab_size - 64, (count,), generator=gen).tolist()


def prefilled(model, ids):
    state = new_state(model)
    logits = prefill(model, state, ids, chunk_size=64)
    return state, logits


def continue_greedy(model, state, logits, steps: int) -> tuple[list[int], torch.Tensor]:
    tokens = []
    for _ in range(steps):
        token = int(torch.argmax(logits))
        tokens.append(token)
        logits = decode_one(model, state, token)
    return tokens, logits


def test_the_model_has_both_layer_kinds(model):
    kinds = layer_kinds(model)
    assert MAMBA in kinds and ATTENTION in kinds


def test_restored_state_continues_exactly_like_the_original(model):
    ids = random_ids(model, 90, seed=1)
    state, logits = prefilled(model, ids)
    snap = take_snapshot(state, logits)
    expected_tokens, expected_logits = continue_greedy(model, state, logits, 6)
    again = restore(snap, model)
    tokens, last = continue_greedy(model, again, snap.logits, 6)
    assert tokens == expected_tokens
    assert torch.equal(last, expected_logits)
    assert again.length == 90 + 6
    assert_matches_scratch(model, ids + tokens, last)


def test_generation_from_a_restored_state_never_changes_the_snapshot(model):
    state, logits = prefilled(model, random_ids(model, 70, seed=2))
    snap = take_snapshot(state, logits)
    before = [t.clone() for t in snap.tensors()]
    continue_greedy(model, state, logits, 3)  # the original state moves on
    for _ in range(2):
        continue_greedy(model, restore(snap, model), snap.logits, 4)
    assert all(torch.equal(a, b) for a, b in zip(before, snap.tensors()))


def test_restore_returns_independent_mamba_tensors(model):
    state, _ = prefilled(model, random_ids(model, 40, seed=3))
    snap = take_snapshot(state)
    first, second = restore(snap, model), restore(snap, model)
    mamba = [i for i, kind in enumerate(layer_kinds(model)) if kind == MAMBA][0]
    a = first.cache.layers[mamba].recurrent_states[0]
    b = second.cache.layers[mamba].recurrent_states[0]
    assert a.data_ptr() != b.data_ptr() != snap.layers[mamba].second.data_ptr()


def test_state_bytes_from_the_config_match_a_real_snapshot(model):
    state, _ = prefilled(model, random_ids(model, 57, seed=4))
    snap = take_snapshot(state)
    assert snap.nbytes == state_bytes(model.config, torch.float32, 57)


def test_flat_tensors_round_trip(model):
    state, logits = prefilled(model, random_ids(model, 33, seed=5))
    snap = take_snapshot(state, logits)
    flat = to_tensors(snap)
    back = from_tensors(flat, 33, layer_kinds(model))
    assert back.length == 33 and torch.equal(back.logits, snap.logits)
    assert all(torch.equal(a, b) for a, b in zip(back.tensors(), snap.tensors()))


def test_flat_tensors_with_wrong_length_or_layers_are_refused(model):
    state, _ = prefilled(model, random_ids(model, 20, seed=6))
    flat = to_tensors(take_snapshot(state))
    with pytest.raises(StateError, match="covers 20 tokens"):
        from_tensors(flat, 21, layer_kinds(model))
    with pytest.raises(StateError):
        from_tensors(flat, 20, [ATTENTION] * len(layer_kinds(model)))


def test_restore_refuses_a_snapshot_with_other_layers(model):
    state, _ = prefilled(model, random_ids(model, 10, seed=7))
    snap = take_snapshot(state)
    snap.layers = snap.layers[:-1]
    with pytest.raises(StateError, match="layers"):
        restore(snap, model)


def test_shorter_snapshot_can_view_a_longer_ones_kv(model):
    ids = random_ids(model, 80, seed=8)
    state = new_state(model)
    prefill(model, state, ids[:50], chunk_size=64)
    short = take_snapshot(state)
    logits_short = prefill(model, state, ids[50:], chunk_size=64)
    long = take_snapshot(state, logits_short)
    separate = storage_bytes(short.tensors()) + storage_bytes(long.tensors())
    kv_before = [t.clone() for t in short.tensors()]
    share_kv_prefix(short, long)
    assert storage_bytes(short.tensors() + long.tensors()) < separate
    assert all(torch.equal(a, b) for a, b in zip(kv_before, short.tensors()))
    detach_kv(short)
    assert storage_bytes(short.tensors() + long.tensors()) == separate
