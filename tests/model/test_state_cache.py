"""The prefix state cache gives the logits of a from-scratch computation of the same ids.

Every reuse is checked against ``logits_from_scratch`` (one uncached forward, see
logit_reference.py) on the sensitive tiny Granite 4.0-H miniature in fp32: the logits
after the prompt and after a few greedy decode steps on the reused state. The tests also
check how much was reused. tests/model/test_mutations.py runs some of them with bugs
injected and requires them to fail.
"""

from __future__ import annotations

import random

import pytest
import torch

from feldspar.model.errors import StateError
from feldspar.model.generation import Sampling, decode_tokens
from feldspar.model.snapshot import state_bytes
from feldspar.model.state_cache import PrefixStateCache

from tests.model.logit_reference import assert_matches_scratch, assert_reuse_matches_scratch

CHUNK = 64


@pytest.fixture(scope="module")
def model(tiny_model):
    return tiny_model


def random_ids(model, count: int, rng: random.Random) -> list[int]:
    return [rng.randrange(0, model.config.vocab_size - 64) for _ in range(count)]


def greedy(model, prepared, steps: int = 6) -> list[int]:
    stream = decode_tokens(model, prepared.state, prepared.logits, steps, Sampling(), frozenset())
    return list(stream)


def assert_same_as_fresh(model, prepared, ids, steps: int = 4) -> list[int]:
    """The prepared logits, and decoding on the prepared state, match from-scratch logits."""
    return assert_reuse_matches_scratch(model, ids, prepared.state, prepared.logits, steps)


def big_cache(interval: int = 4096) -> PrefixStateCache:
    return PrefixStateCache(budget_bytes=1 << 30, snapshot_interval=interval)


@pytest.mark.parametrize("seed", range(6))
def test_random_prompts_and_split_points_match_from_scratch(model, seed):
    rng = random.Random(seed)
    cache = big_cache()
    ids = random_ids(model, rng.randrange(20, 200), rng)
    split = rng.randrange(1, len(ids))
    cache.prepare(model, ids[:split], chunk_size=CHUNK)
    prepared = cache.prepare(model, ids, chunk_size=CHUNK)
    assert (prepared.reused_tokens, prepared.computed_tokens) == (split, len(ids) - split)
    assert_same_as_fresh(model, prepared, ids)


def test_using_one_snapshot_twice_gives_identical_results(model):
    """Two prompts resume from the same snapshot (with generation in between); both match."""
    rng = random.Random(10)
    cache = big_cache()
    base = random_ids(model, 120, rng)
    cache.prepare(model, base, chunk_size=CHUNK)
    first_ids, second_ids = base + random_ids(model, 9, rng), base + random_ids(model, 5, rng)
    first = cache.prepare(model, first_ids, chunk_size=CHUNK)
    first_logits = first.logits.clone()
    first_tokens = assert_same_as_fresh(model, first, first_ids)
    second = cache.prepare(model, second_ids, chunk_size=CHUNK)
    assert first.reused_tokens == second.reused_tokens == len(base)
    assert_same_as_fresh(model, second, second_ids)
    again = cache.prepare(model, first_ids + [0], chunk_size=CHUNK)  # third use, past the first's end
    assert again.reused_tokens == len(first_ids)
    assert_same_as_fresh(model, again, first_ids + [0])
    other_cache = big_cache()
    other_cache.prepare(model, base, chunk_size=CHUNK)
    third = other_cache.prepare(model, first_ids, chunk_size=CHUNK)
    assert torch.equal(third.logits, first_logits) and greedy(model, third, 4) == first_tokens


def test_an_exact_repeat_needs_no_compute_and_returns_the_same_logits(model):
    ids = random_ids(model, 77, random.Random(11))
    cache = big_cache()
    first = cache.prepare(model, ids, chunk_size=CHUNK)
    assert_same_as_fresh(model, first, ids)
    second = cache.prepare(model, ids, chunk_size=CHUNK)
    assert (second.reused_tokens, second.computed_tokens) == (77, 0)
    assert_same_as_fresh(model, second, ids)  # stored logits and restored state, not a copy of the first


def test_a_prompt_inside_a_cached_one_resumes_from_an_earlier_snapshot(model):
    ids = random_ids(model, 150, random.Random(12))
    cache = big_cache(interval=64)
    cache.prepare(model, ids, chunk_size=CHUNK)
    prepared = cache.prepare(model, ids[:100], chunk_size=CHUNK)
    assert (prepared.reused_tokens, prepared.computed_tokens) == (64, 36)
    assert_same_as_fresh(model, prepared, ids[:100])


def test_divergence_point_is_snapshotted_so_the_next_sibling_hits(model):
    rng = random.Random(13)
    shared, cache = random_ids(model, 90, rng), big_cache()
    cache.prepare(model, shared + random_ids(model, 20, rng), chunk_size=CHUNK)
    second = cache.prepare(model, shared + random_ids(model, 15, rng), chunk_size=CHUNK)
    assert second.reused_tokens == 0 and 90 in cache.snapshot_lengths()
    third_ids = shared + random_ids(model, 12, rng)
    third = cache.prepare(model, third_ids, chunk_size=CHUNK)
    assert third.reused_tokens == 90
    assert_same_as_fresh(model, third, third_ids)


def test_a_sibling_sharing_the_next_token_resumes_only_from_the_branch_point(model):
    """Prompts that diverge one token after a shared prefix must not resume from each other."""
    rng = random.Random(20)
    shared, cache = random_ids(model, 60, rng) + [7], big_cache()
    first, sibling = shared + random_ids(model, 10, rng), shared + random_ids(model, 30, rng)
    assert first[len(shared)] != sibling[len(shared)]
    cache.prepare(model, first, chunk_size=CHUNK)
    prepared = cache.prepare(model, sibling, chunk_size=CHUNK)
    assert_same_as_fresh(model, prepared, sibling)
    assert prepared.reused_tokens == 0 and len(shared) in cache.snapshot_lengths()


def test_long_prompt_snapshots_every_interval_and_shares_kv(model):
    ids = random_ids(model, 300, random.Random(14))
    cache = big_cache(interval=64)
    cache.prepare(model, ids, chunk_size=CHUNK, boundaries=[100])
    assert cache.snapshot_lengths() == [64, 100, 128, 192, 256, 300]
    separate = sum(state_bytes(model.config, torch.float32, n) for n in cache.snapshot_lengths())
    assert cache.total_bytes < separate
    resumed = cache.prepare(model, ids[:200], chunk_size=CHUNK)  # from the 192 snapshot, a KV view
    assert resumed.reused_tokens == 192
    assert_matches_scratch(model, ids[:200], resumed.logits)


def test_progress_reports_reach_the_computed_total(model):
    ids = random_ids(model, 200, random.Random(15))
    cache, seen = big_cache(), []
    cache.prepare(model, ids[:50], chunk_size=CHUNK)
    cache.prepare(model, ids, chunk_size=CHUNK, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (150, 150) and all(total == 150 for _, total in seen)


def test_multi_turn_resumes_after_the_generated_reply(model):
    rng = random.Random(16)
    cache = big_cache()
    turn1 = random_ids(model, 60, rng)
    prepared = cache.prepare(model, turn1, chunk_size=CHUNK)
    reply = greedy(model, prepared, 5)
    cache.remember(turn1 + reply[:-1], prepared.state)  # the last sampled token was never fed
    turn2 = turn1 + reply + random_ids(model, 25, rng)
    second = cache.prepare(model, turn2, chunk_size=CHUNK)
    assert second.reused_tokens == len(turn1) + len(reply) - 1
    assert_same_as_fresh(model, second, turn2)


def test_retokenised_history_resumes_from_the_last_snapshot_before_the_difference(model):
    rng = random.Random(17)
    cache = big_cache()
    system, user = random_ids(model, 40, rng), random_ids(model, 30, rng)
    prepared = cache.prepare(model, system + user, chunk_size=CHUNK, boundaries=[40])
    reply = greedy(model, prepared, 6)
    cache.remember(system + user + reply[:-1], prepared.state)
    retokenised = system + user + [reply[0] + 1] + reply[1:] + random_ids(model, 10, rng)
    second = cache.prepare(model, retokenised, chunk_size=CHUNK)
    assert second.reused_tokens == len(system + user)
    assert_same_as_fresh(model, second, retokenised)


def test_eviction_under_a_small_budget_keeps_results_correct(model):
    rng = random.Random(18)
    one = state_bytes(model.config, torch.float32, 200) + model.config.vocab_size * 4
    cache = PrefixStateCache(budget_bytes=3 * one, snapshot_interval=32)
    prompts = [random_ids(model, rng.randrange(60, 180), rng) for _ in range(4)]
    for round_ in range(2):
        for ids in prompts:
            prepared = cache.prepare(model, ids + [round_], chunk_size=CHUNK)
            assert cache.total_bytes <= cache.budget_bytes
            assert_same_as_fresh(model, prepared, ids + [round_], steps=3)
    assert 0 < len(cache.entries) < 4 * 7


def test_pinned_snapshots_survive_eviction(model):
    rng = random.Random(19)
    pack_ids = random_ids(model, 100, rng)
    maker = big_cache()
    maker.prepare(model, pack_ids, chunk_size=CHUNK)
    pack = maker.entries[-1].snapshot
    cache = PrefixStateCache(budget_bytes=3 * pack.nbytes, snapshot_interval=32)
    cache.insert(pack_ids, pack, pinned=True)
    for _ in range(3):
        cache.prepare(model, random_ids(model, 90, rng), chunk_size=CHUNK)
    hit = cache.prepare(model, pack_ids + [5, 6], chunk_size=CHUNK)
    assert hit.reused_tokens == 100
    assert_same_as_fresh(model, hit, pack_ids + [5, 6])


def test_a_budget_smaller_than_one_snapshot_is_refused_before_compute(model):
    cache = PrefixStateCache(budget_bytes=1000)
    with pytest.raises(StateError, match="smaller than one snapshot"):
        cache.prepare(model, [1, 2, 3], chunk_size=CHUNK)
    assert cache.entries == []


def test_a_pinned_state_over_the_budget_is_refused(model):
    maker = big_cache()
    maker.prepare(model, list(range(50)), chunk_size=CHUNK)
    snapshot = maker.entries[-1].snapshot
    cache = PrefixStateCache(budget_bytes=snapshot.nbytes // 2)
    with pytest.raises(StateError, match="budget"):
        cache.insert(list(range(50)), snapshot, pinned=True)
    with pytest.raises(StateError, match="covers 50 tokens"):
        big_cache().insert(list(range(49)), snapshot)
