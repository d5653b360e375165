"""The one-row int4 kernels. bf16 (AVX-512 BF16 and VBMI): within one bf16 rounding of the
exact product. fp32 (AVX2): within fp32 summation noise of the exact product, for both of ATen's
CPU packings (blocks of 32 and of 64 rows), tails and every group size. Each is used for one-row
products of its dtype only, and is cleanly off when turned off."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from feldspar.model import int4_gemv
from feldspar.model.generation import Sampling, decode_one, decode_tokens, new_state, prefill
from feldspar.model.int4 import INT4_GROUPS, Int4Linear, dequantize_int4_cpu
from feldspar.model.loader import load_checkpoint

from tests.model.test_int4_layout import pack_in_blocks

CAPABLE = int4_gemv.capable()
BF16, FP32 = torch.bfloat16 in CAPABLE, torch.float32 in CAPABLE


@pytest.fixture
def ready(monkeypatch):
    monkeypatch.delenv(int4_gemv.ENV, raising=False)
    assert int4_gemv.prepare() is bool(CAPABLE)
    return int4_gemv.READY


def layer_and_row(n: int, k: int, group: int, seed: int, dtype=torch.bfloat16) -> tuple[Int4Linear, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    layer = Int4Linear.from_weight((torch.randn(n, k, generator=gen) * 0.05).to(dtype), group)
    return layer, torch.randn(1, k, generator=gen).to(dtype)


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
def test_the_bf16_kernel_is_one_bf16_rounding_from_the_exact_product(blocks, tail, group, groups, seed):
    if torch.bfloat16 not in CAPABLE or not int4_gemv.prepare() or blocks * 64 + tail == 0:
        return
    layer, x = layer_and_row(blocks * 64 + tail, group * groups, group, seed)
    got = int4_gemv.gemv(x, layer.weight, layer.scales_zeros, layer.group)
    assert got.shape == (1, layer.out_features)
    assert_one_rounding_from(got, exact_product(layer, x))
    aten = torch._weight_int4pack_mm_for_cpu(x, layer.weight, layer.group, layer.scales_zeros)
    assert_one_rounding_from(aten, exact_product(layer, x))  # the same standard ATen's kernel meets


@settings(max_examples=40, deadline=None)
@given(block=st.sampled_from([32, 64]), blocks=st.integers(0, 4), tails=st.integers(0, 3),
       group=st.sampled_from(INT4_GROUPS), groups=st.integers(1, 5), seed=st.integers(0, 2**31 - 1))
def test_the_fp32_kernel_is_the_exact_product_up_to_fp32_sums_on_either_packing(block, blocks, tails, group,
                                                                                 groups, seed):
    n, k = blocks * block + 16 * (tails % (block // 16)), group * groups
    if torch.float32 not in CAPABLE or not int4_gemv.prepare() or n == 0:
        return
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 16, (n, k), generator=gen, dtype=torch.int32)
    scales_zeros = torch.stack([torch.rand(groups, n, generator=gen) * 0.01 + 1e-4,
                                torch.randn(groups, n, generator=gen) * 0.01], dim=-1)
    x = torch.randn(1, k, generator=gen) * 4
    got = int4_gemv.gemv(x, pack_in_blocks(codes, block), scales_zeros, group, block)
    scales, zeros = scales_zeros.double().transpose(0, 1).unbind(-1)
    weights = (codes.double().view(n, -1, group) - 8) * scales[..., None] + zeros[..., None]
    exact = x.double() @ weights.view(n, k).t()
    assert got.dtype == torch.float32 and got.shape == (1, n)
    noise = 2.0 ** -20 * (x.double().abs() @ weights.view(n, k).abs().t())  # k * 2^-24, generously
    assert bool(((got.double() - exact).abs() <= noise + 1e-12).all())


def test_the_fp32_kernel_reads_this_machines_packing(ready):
    if torch.float32 not in ready:
        return
    layer, x = layer_and_row(176, 256, 64, 5, torch.float32)
    got = int4_gemv.gemv(x, layer.weight, layer.scales_zeros, layer.group)
    aten = torch._weight_int4pack_mm_for_cpu(x, layer.weight, layer.group, layer.scales_zeros)
    torch.testing.assert_close(got, aten, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.double(), exact_product(layer, x), rtol=1e-5, atol=1e-6)


def test_bad_inputs_are_one_clear_error(ready):
    if torch.bfloat16 in ready:
        layer, x = layer_and_row(64, 128, 64, 0)
        with pytest.raises(RuntimeError, match="group must be even and divide K"):
            int4_gemv.gemv(x, layer.weight, layer.scales_zeros, 48)
        with pytest.raises(RuntimeError, match="scales_zeros must be bf16"):
            int4_gemv.gemv(x, layer.weight, layer.scales_zeros.float(), 64)
        with pytest.raises(RuntimeError, match="w must be the uint8 CPU int4 packing"):
            int4_gemv.gemv(x, layer.weight[:10], layer.scales_zeros, 64)
    if torch.float32 in ready:
        layer, x = layer_and_row(64, 128, 64, 0, torch.float32)
        with pytest.raises(RuntimeError, match="group must be a multiple of 4 and divide K"):
            int4_gemv.gemv(x, layer.weight, layer.scales_zeros, 48)
        with pytest.raises(RuntimeError, match="block must be 32 or 64 rows"):
            int4_gemv.gemv(x, layer.weight, layer.scales_zeros, 64, block=48)
        with pytest.raises(RuntimeError, match="scales_zeros must be fp32"):
            int4_gemv.gemv(x, layer.weight, layer.scales_zeros.bfloat16(), 64)
        with pytest.raises(RuntimeError, match="x must be fp32 \\[1, K\\]"):
            int4_gemv.gemv(torch.cat([x, x]), layer.weight, layer.scales_zeros, 64)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_one_row_products_of_a_ready_dtype_use_its_kernel_and_others_do_not(ready, monkeypatch, dtype):
    layer, x = layer_and_row(112, 256, 128, 3, dtype)
    calls = []
    real = int4_gemv.gemv
    monkeypatch.setattr(int4_gemv, "gemv", lambda *a: calls.append(a[0].shape) or real(*a))
    one_row = layer(x.view(1, 1, -1))
    if dtype == torch.bfloat16:
        assert_one_rounding_from(one_row.view(1, -1), exact_product(layer, x))
    layer(torch.cat([x, x]))  # two rows: ATen's kernel
    other = torch.float32 if dtype == torch.bfloat16 else torch.bfloat16
    layer(x.to(other))  # the other dtype's kernel, where that one is ready
    assert calls == [(1, 256)] * ((dtype in ready) + (other in ready))


def test_turned_off_they_are_not_used(monkeypatch):
    monkeypatch.setenv(int4_gemv.ENV, "off")
    assert int4_gemv.prepare() is False and int4_gemv.READY == frozenset()
    assert "turned off" in int4_gemv.describe()
    monkeypatch.delenv(int4_gemv.ENV)
    assert int4_gemv.prepare() is bool(CAPABLE)
    assert int4_gemv.READY == CAPABLE
    assert ("bf16 by Feldspar's AVX-512 BF16" if BF16 else "bf16 by ATen's kernel") in int4_gemv.describe()
    assert ("fp32 by Feldspar's AVX2" if FP32 else "fp32 by ATen's kernel") in int4_gemv.describe()


def greedy(model) -> list[int]:
    state = new_state(model)
    logits = prefill(model, state, list(range(7, 47)), chunk_size=16)
    return list(decode_tokens(model, state, logits, 12, Sampling(), frozenset()))


def test_a_bf16_int4_model_decodes_the_same_tokens_with_and_without_it(tiny_base_checkpoint, monkeypatch):
    """Loading an int4 model readies the kernel; its greedy tokens are those of ATen's kernel."""
    monkeypatch.delenv(int4_gemv.ENV, raising=False)
    model = load_checkpoint(str(tiny_base_checkpoint), "cpu", "bfloat16", "int4")[0]
    assert int4_gemv.READY == CAPABLE
    calls = []
    real = int4_gemv.gemv
    monkeypatch.setattr(int4_gemv, "gemv", lambda *a: calls.append(1) or real(*a))
    with_kernel = greedy(model)
    assert bool(calls) is BF16
    monkeypatch.setattr(int4_gemv, "READY", frozenset())
    assert greedy(model) == with_kernel


def test_an_fp32_int4_model_decodes_the_same_tokens_and_logits_with_and_without_it(tiny_base_checkpoint,
                                                                                    monkeypatch):
    monkeypatch.delenv(int4_gemv.ENV, raising=False)
    model = load_checkpoint(str(tiny_base_checkpoint), "cpu", "float32", "int4")[0]

    def step() -> torch.Tensor:
        state = new_state(model)
        prefill(model, state, list(range(7, 47)), chunk_size=16)
        return decode_one(model, state, 11)

    calls = []
    real = int4_gemv.gemv
    monkeypatch.setattr(int4_gemv, "gemv", lambda *a: calls.append(1) or real(*a))
    with_kernel, tokens = step(), greedy(model)
    assert bool(calls) is FP32
    monkeypatch.setattr(int4_gemv, "READY", frozenset())
    torch.testing.assert_close(with_kernel, step(), rtol=0, atol=1e-4)
    assert greedy(model) == tokens
