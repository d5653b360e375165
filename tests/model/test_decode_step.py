"""The fused decode step (model/decode_step.py) equals the transformers forward at every step.

Each tiny kind (MoE hybrid, dense attention-only, dense hybrid; fp32 and quantised) decodes
36 tokens twice from the same prefill: once with ``decode_one`` (the fused step) and once
with the transformers forward; the logits agree within the project tolerance at every
step, the states end equal, and the final logits match a from-scratch forward. Prefill by
transformers and decode by the step interleave on one cache.
"""

from __future__ import annotations

import copy

import pytest
import torch

from feldspar.model import decode_step
from feldspar.model.generation import (
    ModelState, Sampling, decode_one, decode_tokens, forward, new_state, prefill,
)
from feldspar.model.loader import load_checkpoint
from feldspar.model.quant import quantize
from tests.model.logit_reference import assert_logits_close, assert_matches_scratch

PROMPT = list(range(7, 47))
STEPS = 36
KINDS = ["tiny_checkpoint", "tiny_dense_checkpoint", "tiny_base_checkpoint"]


def load(request, fixture: str, quant: str = "none"):
    model, _tok, _resolved = load_checkpoint(str(request.getfixturevalue(fixture)), "cpu", "float32")
    return quantize(model, quant)


def reference_one(model, state: ModelState, token: int) -> torch.Tensor:
    """One token through the transformers forward (the path decode_one replaces)."""
    return forward(model, state, torch.tensor([[token]], dtype=torch.long))


def cache_tensors(state: ModelState) -> list[torch.Tensor]:
    out = []
    for layer in state.cache.layers:
        if hasattr(layer, "conv_states"):
            out += [layer.conv_states[0], layer.recurrent_states[0]]
        else:
            out += [layer.keys, layer.values]
    return out


def decode_both(model, prompt: list[int], steps: int) -> tuple[list[int], torch.Tensor, ModelState, ModelState]:
    """Greedy decode with the step and with the reference side by side, comparing every step."""
    fast = new_state(model)
    logits = prefill(model, fast, prompt, chunk_size=16)
    ref = ModelState(cache=copy.deepcopy(fast.cache), length=fast.length)
    tokens = [int(torch.argmax(logits))]
    for i in range(steps):
        assert decode_step.supports(model, fast.cache, fast.length), "the fused step did not apply"
        got = decode_one(model, fast, tokens[-1])
        want = reference_one(model, ref, tokens[-1])
        assert_logits_close(got, want, f"step {i}")
        tokens.append(int(torch.argmax(want)))
        logits = got
    return tokens, logits, fast, ref


@pytest.mark.parametrize("fixture", KINDS)
def test_step_matches_transformers_every_step(request, fixture: str) -> None:
    model = load(request, fixture)
    tokens, logits, fast, ref = decode_both(model, PROMPT, STEPS)
    assert fast.length == ref.length == len(PROMPT) + STEPS
    for mine, theirs in zip(cache_tensors(fast), cache_tensors(ref)):
        assert mine.shape == theirs.shape
        assert (mine - theirs).abs().max().item() < 1e-4
    assert_matches_scratch(model, PROMPT + tokens[:-1], logits, "after the fused steps")


def test_step_matches_while_the_attention_room_regrows(request, monkeypatch) -> None:
    monkeypatch.setattr(decode_step, "ROOM", 3)  # 40 prompt tokens: room for 10, then 12, 15…
    model = load(request, "tiny_dense_checkpoint")
    tokens, logits, _fast, _ref = decode_both(model, PROMPT, STEPS)
    assert_matches_scratch(model, PROMPT + tokens[:-1], logits, "across regrown rooms")


def test_a_step_writes_into_room_and_never_into_a_tensor_held_elsewhere(request) -> None:
    model = load(request, "tiny_dense_checkpoint")
    state = new_state(model)
    prefill(model, state, PROMPT, chunk_size=16)
    decode_one(model, state, 5)
    layer = state.cache.layers[0]
    where = layer.keys.data_ptr()
    decode_one(model, state, 6)
    assert layer.keys.data_ptr() == where and layer.keys.shape[-2] == len(PROMPT) + 2  # no copy
    held = [(t, t.clone()) for t in (layer.keys, layer.values)]
    fork = copy.deepcopy(state.cache)
    decode_one(model, ModelState(cache=fork, length=state.length), 7)
    layer.crop(-2)  # rewinding: the held tensors cover the positions written next
    decode_one(model, ModelState(cache=state.cache, length=state.length - 2), 8)
    for tensor, before in held:
        assert torch.equal(tensor, before), "a step wrote into a tensor the layer no longer owned"


@pytest.mark.parametrize("quant", ["int8", "int4"])
def test_step_matches_on_quantised_moe(request, quant: str) -> None:
    model = load(request, "tiny_checkpoint", quant)
    _tokens, _logits, fast, ref = decode_both(model, PROMPT, STEPS)
    assert fast.length == ref.length


@pytest.mark.parametrize("fixture", ["tiny_checkpoint", "tiny_dense_checkpoint"])
def test_prefill_and_step_interleave_on_one_cache(request, fixture: str) -> None:
    model = load(request, fixture)
    state = new_state(model)
    seen = list(PROMPT)
    logits = prefill(model, state, seen, chunk_size=16)
    for more in ([3, 4, 5, 6, 7, 8, 9], [11, 12, 13]):
        for _ in range(5):
            seen.append(int(torch.argmax(logits)))
            logits = decode_one(model, state, seen[-1])
        seen += more
        logits = prefill(model, state, more, chunk_size=4)
    assert state.length == len(seen)
    assert_matches_scratch(model, seen, logits, "prefill, step, prefill, step")


def test_sampled_decode_picks_the_same_tokens(request, monkeypatch) -> None:
    model = load(request, "tiny_checkpoint")
    sampling = Sampling(temperature=0.8, top_p=0.9, seed=3)
    runs = []
    for mode in ("fast", "ref"):
        monkeypatch.setenv("FELDSPAR_DECODE_STEP", mode)
        state = new_state(model)
        logits = prefill(model, state, PROMPT, chunk_size=16)
        runs.append(list(decode_tokens(model, state, logits, 32, sampling, frozenset())))
    assert runs[0] == runs[1]


def test_step_does_not_apply_before_prefill(request) -> None:
    model = load(request, "tiny_base_checkpoint")
    state = new_state(model)
    assert not decode_step.supports(model, state.cache, state.length)
    logits = decode_one(model, state, 5)  # falls back to the transformers forward
    assert state.length == 1
    assert_matches_scratch(model, [5], logits, "first token")
    assert decode_step.supports(model, state.cache, state.length)


@pytest.mark.parametrize("by_matmuls", [True, False])
def test_attention_of_one_token_matches_the_fused_kernel_either_way(monkeypatch, by_matmuls: bool) -> None:
    """fp32 always, and bf16 where ``BMM_ATTENTION_BF16`` says so (AMD CPUs), attend by two
    matmuls per KV head; both dtypes and both ways give the fused kernel's grouped-query
    attention over cache tensors that are views into spare room."""
    monkeypatch.setattr(decode_step, "BMM_ATTENTION_BF16", by_matmuls)
    torch.manual_seed(0)
    q = torch.randn(1, 6, 1, 16)
    room = torch.randn(2, 2, 50, 16)
    keys, values = room[0:1, :, :40], room[1:2, :, :40]
    want = torch.nn.functional.scaled_dot_product_attention(q, keys, values, scale=0.25, enable_gqa=True)
    torch.testing.assert_close(decode_step.attend_cache(q, keys, values, 0.25), want, rtol=1e-5, atol=1e-5)
    got = decode_step.attend_cache(q.bfloat16(), keys.bfloat16(), values.bfloat16(), 0.25)
    assert got.dtype == torch.bfloat16 and got.shape == q.shape
    assert (got.float() - want).abs().max() < 2e-2


@pytest.mark.parametrize("breaks", ["mamba records its past", "an attention layer is empty"])
def test_step_does_not_apply_to_a_cache_it_cannot_advance(request, breaks) -> None:
    model = load(request, "tiny_checkpoint")
    state = new_state(model)
    prefill(model, state, PROMPT, chunk_size=16)
    assert decode_step.supports(model, state.cache, state.length)
    kind = "conv_states" if breaks.startswith("mamba") else "keys"
    layer = next(cached for cached in state.cache.layers if hasattr(cached, kind)
                 and (kind == "keys") != hasattr(cached, "conv_states"))
    if kind == "conv_states":
        layer.record_past = True
    else:
        layer.is_initialized = False
    assert not decode_step.supports(model, state.cache, state.length)
