"""The one-row int4 kernel: ready where the CPU has AVX-512 BF16 and VBMI, within one bf16
rounding of the exact product for every shape the int4 layers take (full 64-row blocks and
tails, every group size), used for bf16 decode rows only, and cleanly off when turned off."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from feldspar.model import int4_gemv
from feldspar.model.cpu import cpu_flags
from feldspar.model.generation import Sampling, decode_tokens, new_state, prefill
from feldspar.model.int4 import INT4_GROUPS, Int4Linear, dequantize_int4_cpu
from feldspar.model.loader import load_checkpoint

CAPABLE = int4_gemv.INSTRUCTIONS <= cpu_flags()


@pytest.fixture
def ready(monkeypatch):
    monkeypatch.delenv(int4_gemv.ENV, raising=False)
    assert int4_gemv.prepare() is CAPABLE
    return CAPABLE


def layer_and_row(n: int, k: int, group: int, seed: int) -> tuple[Int4Linear, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    layer = Int4Linear.from_weight((torch.randn(n, k, generator=gen) * 0.05).bfloat16(), group)
    return layer, torch.randn(1, k, generator=gen).bfloat16()


def exact_product(layer: Int4Linear, x: torch.Tensor) -> torch.Tensor:
    weight = dequantize_int4_cpu(layer.weight, layer.scales_zeros, layer.group, layer.out_features, layer.in_features)
    return x.double() @ weight.double().t()


def assert_one_rounding_from(got: torch.Tensor, exact: torch.Tensor) -> None:
    """bf16 keeps 8 bits: a correctly summed result is within 2^-8 of the exact one, relatively,
    plus fp32 summation noise far below that."""
    assert got.dtype == torch.bfloat16
    error = (got.double() - exact).abs()
    bound = 2.0 ** -8 * exact.abs() + 2.0 ** -16 * exact.abs().max()
    assert bool((error <= bound).all()), f"worst {float((error - bound).max()):.3g} over the bound"


@settings(max_examples=30, deadline=None)
@given(blocks=st.integers(0, 4), tail=st.sampled_from([0, 16, 32, 48]), group=st.sampled_from(INT4_GROUPS),
       groups=st.integers(1, 6), seed=st.integers(0, 2**31 - 1))
def test_the_kernel_is_one_bf16_rounding_from_the_exact_product(blocks, tail, group, groups, seed):
    if not int4_gemv.prepare() or blocks * 64 + tail == 0:
        return
    layer, x = layer_and_row(blocks * 64 + tail, group * groups, group, seed)
    got = int4_gemv.gemv(x, layer.weight, layer.scales_zeros, layer.group)
    assert got.shape == (1, layer.out_features)
    assert_one_rounding_from(got, exact_product(layer, x))
    aten = torch._weight_int4pack_mm_for_cpu(x, layer.weight, layer.group, layer.scales_zeros)
    assert_one_rounding_from(aten, exact_product(layer, x))  # the same standard ATen's kernel meets


def test_bad_inputs_are_one_clear_error(ready):
    if not ready:
        return
    layer, x = layer_and_row(64, 128, 64, 0)
    with pytest.raises(RuntimeError, match="x must be bf16 \\[1, K\\]"):
        int4_gemv.gemv(x.float(), layer.weight, layer.scales_zeros, 64)
    with pytest.raises(RuntimeError, match="group must be even and divide K"):
        int4_gemv.gemv(x, layer.weight, layer.scales_zeros, 48)
    with pytest.raises(RuntimeError, match="scales_zeros must be bf16"):
        int4_gemv.gemv(x, layer.weight, layer.scales_zeros.float(), 64)
    with pytest.raises(RuntimeError, match="w must be the uint8 CPU int4 packing"):
        int4_gemv.gemv(x, layer.weight[:10], layer.scales_zeros, 64)


def test_bf16_decode_rows_use_the_kernel_and_other_rows_do_not(ready, monkeypatch):
    layer, x = layer_and_row(112, 256, 128, 3)
    calls = []
    real = int4_gemv.gemv
    monkeypatch.setattr(int4_gemv, "gemv", lambda *a: calls.append(a[0].shape) or real(*a))
    one_row = layer(x.view(1, 1, -1))
    assert_one_rounding_from(one_row.view(1, -1), exact_product(layer, x))
    layer(torch.cat([x, x]))  # two rows: ATen's kernel
    layer(x.float())  # fp32 activations: ATen's kernel
    assert calls == ([(1, 256)] if ready else [])


def test_turned_off_it_is_not_used(monkeypatch):
    monkeypatch.setenv(int4_gemv.ENV, "off")
    assert int4_gemv.prepare() is False and int4_gemv.READY is False
    assert "by ATen's kernel" in int4_gemv.describe()
    monkeypatch.delenv(int4_gemv.ENV)
    assert int4_gemv.prepare() is CAPABLE
    assert ("Feldspar's AVX-512 BF16 kernel" if CAPABLE else "no AVX-512 BF16") in int4_gemv.describe()


def test_a_bf16_int4_model_decodes_the_same_tokens_with_and_without_it(tiny_base_checkpoint, monkeypatch):
    """Loading an int4 model readies the kernel; its greedy tokens are those of ATen's kernel."""
    monkeypatch.delenv(int4_gemv.ENV, raising=False)
    model = load_checkpoint(str(tiny_base_checkpoint), "cpu", "bfloat16", "int4")[0]
    assert int4_gemv.READY is CAPABLE

    def greedy() -> list[int]:
        state = new_state(model)
        logits = prefill(model, state, list(range(7, 47)), chunk_size=16)
        return list(decode_tokens(model, state, logits, 12, Sampling(), frozenset()))

    calls = []
    real = int4_gemv.gemv
    monkeypatch.setattr(int4_gemv, "gemv", lambda *a: calls.append(1) or real(*a))
    with_kernel = greedy()
    assert bool(calls) is CAPABLE
    monkeypatch.setattr(int4_gemv, "READY", False)
    assert greedy() == with_kernel
