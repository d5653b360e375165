"""The decode attention kernels: fp32 (AVX2) and bf16 (AVX-512 BF16), each ready where the CPU has
its instructions, within a rounding of the exact attention for grouped heads, any head size up to
256 (fp32: a multiple of 8) and caches that are views with room behind them, used by the decode
step, and cleanly off."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from feldspar.model import attend, decode_step
from feldspar.model.cpu import cpu_flags
from feldspar.model.generation import Sampling, decode_tokens, new_state, prefill
from feldspar.model.loader import load_checkpoint

CAPABLE = {dtype: attend.INSTRUCTIONS[dtype] <= cpu_flags() for dtype in attend.ENV}
DTYPES = [torch.float32, torch.bfloat16]


def cache(kv: int, n: int, d: int, room: int, seed: int, dtype=torch.bfloat16) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values as the decode step leaves them: views of buffers with ``room`` spare tokens."""
    buffers = torch.randn(2, kv, n + room, d, generator=torch.Generator().manual_seed(seed)).to(dtype)
    return buffers[0:1, :, :n], buffers[1:2, :, :n]


def exact(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float) -> torch.Tensor:
    rows = q.double().view(keys.shape[1], -1, q.shape[-1])
    weights = torch.softmax(rows @ keys[0].double().transpose(1, 2) * scale, dim=-1)
    return (weights @ values[0].double()).view_as(q)


def assert_one_rounding_from(got: torch.Tensor, expected: torch.Tensor, values: torch.Tensor) -> None:
    """bf16: one bf16 rounding of the exact result; fp32: fp32 sums' roundings of the values' size."""
    assert got.dtype == values.dtype and got.shape == expected.shape
    error = (got.double() - expected).abs()
    if values.dtype == torch.bfloat16:
        bound = 2.0 ** -8 * expected.abs() + 2.0 ** -14 * expected.abs().max()
    else:
        bound = 1e-5 * expected.abs() + 2e-6 * values.abs().max().double()
    assert bool((error <= bound).all()), f"worst {float((error - bound).max()):.3g} over the bound"


@settings(max_examples=40, deadline=None)
@given(kv=st.integers(1, 4), rep=st.integers(1, 4), n=st.integers(1, 300), d=st.sampled_from([16, 64, 80, 128, 256]),
       room=st.sampled_from([0, 5, 64]), seed=st.integers(0, 2**31 - 1), dtype=st.sampled_from(DTYPES))
def test_the_kernel_is_a_rounding_from_the_exact_attention(kv, rep, n, d, room, seed, dtype):
    if not CAPABLE[dtype]:
        return
    assert attend.ready(dtype), "the kernel did not build or failed its check"
    keys, values = cache(kv, n, d, room, seed, dtype)
    q = torch.randn(1, kv * rep, 1, d, generator=torch.Generator().manual_seed(seed + 1)).to(dtype)
    assert attend.fits(q, keys)
    scale = d ** -0.5
    assert_one_rounding_from(attend.attend(q, keys, values, scale), exact(q, keys, values, scale), values)
    assert_one_rounding_from(attend.reference(q, keys, values, scale), exact(q, keys, values, scale), values)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bad_inputs_are_one_clear_error(dtype):
    if not CAPABLE[dtype]:
        return
    assert attend.ready(dtype), "the kernel did not build or failed its check"
    name = "bf16" if dtype == torch.bfloat16 else "fp32"
    keys, values = cache(2, 10, 64, 0, 0, dtype)
    q = torch.randn(1, 4, 1, 64).to(dtype)
    other = torch.float32 if dtype == torch.bfloat16 else torch.bfloat16
    with pytest.raises(RuntimeError, match=f"q must be {name}"):
        getattr(torch.ops.feldspar, attend._OPS[dtype])(q.to(other), keys, values, 0.1)
    with pytest.raises(RuntimeError, match="shapes do not agree"):
        attend.attend(torch.randn(1, 3, 1, 64).to(dtype), keys, values, 0.1)
    with pytest.raises(RuntimeError, match="shapes do not agree"):
        big, _ = cache(2, 10, 512, 0, 0, dtype)
        attend.attend(torch.randn(1, 4, 1, 512).to(dtype), big, big, 0.1)
    with pytest.raises(RuntimeError, match="contiguous"):
        attend.attend(q, keys.transpose(2, 3).contiguous().transpose(2, 3), values, 0.1)


def test_an_fp32_head_size_that_is_no_multiple_of_8_goes_to_the_matmuls():
    keys, values = cache(2, 9, 20, 3, 0, torch.float32)
    q = torch.randn(1, 4, 1, 20)
    assert not attend.fits(q, keys)
    torch.testing.assert_close(decode_step.attend_cache(q, keys, values, 0.2), exact(q, keys, values, 0.2).float())
    if attend.ready(torch.float32):
        with pytest.raises(RuntimeError, match="multiple of 8"):
            attend.attend(q, keys, values, 0.2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_turned_off_the_matmuls_attend(monkeypatch, dtype):
    monkeypatch.setenv(attend.ENV[dtype], "off")
    assert attend.ready(dtype) is False
    monkeypatch.delenv(attend.ENV[dtype])
    assert attend.ready(dtype) is CAPABLE[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_model_decodes_the_same_tokens_with_and_without_it(tiny_base_checkpoint, monkeypatch, dtype):
    """fp32 goes to its kernel, and bf16 to its own where the decode step attends by matmuls (AMD);
    the same greedy tokens with the kernel turned off."""
    monkeypatch.delenv(attend.ENV[dtype], raising=False)
    monkeypatch.setattr(decode_step, "BMM_ATTENTION_BF16", True)
    model = load_checkpoint(str(tiny_base_checkpoint), "cpu", str(dtype).removeprefix("torch."), "none")[0]

    def greedy() -> list[int]:
        state = new_state(model)
        logits = prefill(model, state, list(range(7, 47)), chunk_size=16)
        return list(decode_tokens(model, state, logits, 12, Sampling(), frozenset()))

    calls = []
    real = attend.attend
    monkeypatch.setattr(attend, "attend", lambda *a: calls.append(a[1].shape[2]) or real(*a))
    with_kernel = greedy()
    assert calls == (list(range(41, 52)) if CAPABLE[dtype] else [])  # one attention layer, one call per step
    monkeypatch.setenv(attend.ENV[dtype], "off")
    assert greedy() == with_kernel
