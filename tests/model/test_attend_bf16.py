"""The bf16 decode attention kernel: ready where the CPU has AVX-512 BF16, within one bf16
rounding of the exact attention for grouped heads, any head size up to 256 and caches that are
views with room behind them, used by the decode step for bf16 on AMD CPUs, and cleanly off."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from feldspar.model import attend_bf16, decode_step
from feldspar.model.cpu import cpu_flags
from feldspar.model.generation import Sampling, decode_tokens, new_state, prefill
from feldspar.model.loader import load_checkpoint

CAPABLE = attend_bf16.INSTRUCTIONS <= cpu_flags()


def cache(kv: int, n: int, d: int, room: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values as the decode step leaves them: views of buffers with ``room`` spare tokens."""
    buffers = torch.randn(2, kv, n + room, d, generator=torch.Generator().manual_seed(seed)).bfloat16()
    return buffers[0:1, :, :n], buffers[1:2, :, :n]


def exact(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float) -> torch.Tensor:
    rows = q.double().view(keys.shape[1], -1, q.shape[-1])
    weights = torch.softmax(rows @ keys[0].double().transpose(1, 2) * scale, dim=-1)
    return (weights @ values[0].double()).view_as(q)


def assert_one_rounding_from(got: torch.Tensor, expected: torch.Tensor) -> None:
    assert got.dtype == torch.bfloat16 and got.shape == expected.shape
    error = (got.double() - expected).abs()
    bound = 2.0 ** -8 * expected.abs() + 2.0 ** -14 * expected.abs().max()
    assert bool((error <= bound).all()), f"worst {float((error - bound).max()):.3g} over the bound"


@settings(max_examples=40, deadline=None)
@given(kv=st.integers(1, 4), rep=st.integers(1, 4), n=st.integers(1, 300), d=st.sampled_from([16, 64, 80, 128, 256]),
       room=st.sampled_from([0, 5, 64]), seed=st.integers(0, 2**31 - 1))
def test_the_kernel_is_one_bf16_rounding_from_the_exact_attention(kv, rep, n, d, room, seed):
    if not attend_bf16.ready():
        return
    keys, values = cache(kv, n, d, room, seed)
    q = torch.randn(1, kv * rep, 1, d, generator=torch.Generator().manual_seed(seed + 1)).bfloat16()
    scale = d ** -0.5
    assert_one_rounding_from(attend_bf16.attend(q, keys, values, scale), exact(q, keys, values, scale))
    assert_one_rounding_from(attend_bf16.reference(q, keys, values, scale), exact(q, keys, values, scale))


def test_bad_inputs_are_one_clear_error():
    if not attend_bf16.ready():
        return
    keys, values = cache(2, 10, 64, 0, 0)
    q = torch.randn(1, 4, 1, 64).bfloat16()
    with pytest.raises(RuntimeError, match="q must be bf16"):
        attend_bf16.attend(q.float(), keys, values, 0.1)
    with pytest.raises(RuntimeError, match="shapes do not agree"):
        attend_bf16.attend(torch.randn(1, 3, 1, 64).bfloat16(), keys, values, 0.1)
    with pytest.raises(RuntimeError, match="shapes do not agree"):
        big, _ = cache(2, 10, 512, 0, 0)
        attend_bf16.attend(torch.randn(1, 4, 1, 512).bfloat16(), big, big, 0.1)
    with pytest.raises(RuntimeError, match="contiguous"):
        attend_bf16.attend(q, keys.transpose(2, 3).contiguous().transpose(2, 3), values, 0.1)


def test_turned_off_the_matmuls_attend(monkeypatch):
    monkeypatch.setenv(attend_bf16.ENV, "off")
    assert attend_bf16.ready() is False
    monkeypatch.delenv(attend_bf16.ENV)
    assert attend_bf16.ready() is CAPABLE


def test_a_bf16_model_decodes_the_same_tokens_with_and_without_it(tiny_base_checkpoint, monkeypatch):
    """Where the decode step attends by matmuls (AMD), bf16 goes to the kernel; same greedy tokens."""
    monkeypatch.delenv(attend_bf16.ENV, raising=False)
    monkeypatch.setattr(decode_step, "BMM_ATTENTION_BF16", True)
    model = load_checkpoint(str(tiny_base_checkpoint), "cpu", "bfloat16", "none")[0]

    def greedy() -> list[int]:
        state = new_state(model)
        logits = prefill(model, state, list(range(7, 47)), chunk_size=16)
        return list(decode_tokens(model, state, logits, 12, Sampling(), frozenset()))

    calls = []
    real = attend_bf16.attend
    monkeypatch.setattr(attend_bf16, "attend", lambda *a: calls.append(a[1].shape[2]) or real(*a))
    with_kernel = greedy()
    assert calls == (list(range(41, 52)) if CAPABLE else [])  # one attention layer, one call per step
    monkeypatch.setenv(attend_bf16.ENV, "off")
    assert greedy() == with_kernel
