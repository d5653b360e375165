"""The tiny miniature is sensitive: every part of its hybrid state visibly moves the logits.

A 120-token prompt is prefilled to 119 tokens and snapshotted; the last token is then fed
onto the restored snapshot ("resume"), cleanly or with one part of the state changed:
SSM state, conv state or attention KV, zeroed or with every element off by 0.1 %; or from
the snapshot one token earlier or later. Zeroing any part or resuming one token off must
move the final logits by at least 100x the comparison tolerance of logit_reference.py;
a 0.1 % error in any part by at least 5x (measured 7.7x conv, 9.1x SSM, 18x KV here; the fp32 rounding noise of
the states themselves, about 1e-6, keeps a 0.1 % error within ~1,000x of the noise floor).
Clean runs must stay far under the tolerance.
"""

from __future__ import annotations

import random

import pytest

from feldspar.model.generation import decode_one, new_state, prefill
from feldspar.model.snapshot import restore, take_snapshot

from tests.model.logit_reference import LOGIT_TOLERANCE, assert_matches_scratch, logit_difference
from tests.model.state_mutations import PARTS, mutate_snapshot

PROMPT, RESUME_AT = 120, 119
LOUD, PERTURBED = 100, 5  # required movement, in tolerances: zeroed or shifted state; 0.1 % error
CLEAN_SHARE = 0.2  # clean runs stay under this share of the tolerance (measured <= 0.04)


@pytest.fixture(scope="module")
def scenario(tiny_model):
    rng = random.Random(2024)
    ids = [rng.randrange(0, tiny_model.config.vocab_size - 64) for _ in range(PROMPT)]
    snapshots = {}
    for at in (RESUME_AT - 1, RESUME_AT, RESUME_AT + 1):
        state = new_state(tiny_model)
        prefill(tiny_model, state, ids[:at], chunk_size=64)
        snapshots[at] = take_snapshot(state)
    return tiny_model, ids, snapshots


def resume(model, ids, saved):
    """Logits after ``ids`` fed from RESUME_AT onto a restored ``saved`` state."""
    return prefill(model, restore(saved, model), ids[RESUME_AT:], chunk_size=64)


def test_clean_resume_and_decode_stay_far_under_the_tolerance(scenario):
    model, ids, snapshots = scenario
    clean = resume(model, ids, snapshots[RESUME_AT])
    assert assert_matches_scratch(model, ids, clean, "clean resume") <= CLEAN_SHARE * LOGIT_TOLERANCE
    state = restore(snapshots[RESUME_AT - 1], model)
    decode_one(model, state, ids[RESUME_AT - 1])
    decoded = decode_one(model, state, ids[RESUME_AT])
    assert assert_matches_scratch(model, ids, decoded, "clean decode") <= CLEAN_SHARE * LOGIT_TOLERANCE


@pytest.mark.parametrize("part", PARTS)
@pytest.mark.parametrize(("how", "factor"), [("zero", LOUD), ("perturb", PERTURBED)])
def test_changing_any_part_of_the_state_moves_the_logits(scenario, part, how, factor):
    model, ids, snapshots = scenario
    clean = resume(model, ids, snapshots[RESUME_AT])
    changed = resume(model, ids, mutate_snapshot(snapshots[RESUME_AT], part, how, fraction=1e-3))
    moved = logit_difference(changed, clean)
    assert moved >= factor * LOGIT_TOLERANCE, f"{how} {part}: logits moved {moved:.3g}"


@pytest.mark.parametrize("shift", [-1, 1])
def test_resuming_one_token_off_moves_the_logits(scenario, shift):
    model, ids, snapshots = scenario
    clean = resume(model, ids, snapshots[RESUME_AT])
    off = snapshots[RESUME_AT + shift]
    shifted = prefill(model, restore(off, model), ids[RESUME_AT:], chunk_size=64)
    moved = logit_difference(shifted, clean)
    assert moved >= LOUD * LOGIT_TOLERANCE, f"resume {shift:+d} token: logits moved {moved:.3g}"
