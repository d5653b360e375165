"""int4's bf16-exact grid: every stored weight is a bf16 number, it costs little accuracy, and a
bf16 prefill multiplies by exactly the weights the int4 kernel uses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from feldspar.model import int4
from feldspar.model.int4 import DEQUANT_ROWS, Int4Linear, dequantize_int4_cpu, on_bf16_grid, quantize_int4


def weights(kind: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(7)
    w = torch.randn(64, 512, generator=generator) * 0.02
    if kind == "heavy-tailed":
        return w.pow(3) * 400
    if kind == "far from zero":  # every group on one side of zero, narrow
        return w * 0.1 + 0.5
    if kind == "zero groups":  # pruned
        w[:, :128] = 0.0
    if kind == "constant groups":
        w[:, :128] = 0.25
    return w


def stored_values(weight: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(what the codes stand for [N, K], each weight's group scale [N, K])."""
    q, scales_zeros = quantize_int4(weight, group)
    scales, zeros = (scales_zeros[..., i].t().repeat_interleave(group, dim=1) for i in (0, 1))
    return (q.float() - 8) * scales + zeros, scales


def plain_minmax_int4(weight: torch.Tensor, group: int) -> torch.Tensor:
    """The textbook asymmetric int4 (scale = range / 15, zero at the minimum): the accuracy bar."""
    w = weight.reshape(weight.shape[0], -1, group)
    low, high = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
    scale = ((high - low) / 15).clamp(min=1e-8)
    return (low + torch.round((w - low) / scale).clamp(0, 15) * scale).reshape(weight.shape)


@pytest.mark.parametrize("kind", ["normal", "heavy-tailed", "zero groups"])
def test_every_stored_int4_weight_is_a_bf16_number(kind):
    weight = weights(kind)
    values, _ = stored_values(weight, 128)
    assert torch.equal(values.bfloat16().float(), values)
    assert on_bf16_grid(quantize_int4(weight, 128)[1])
    assert on_bf16_grid(quantize_int4(weight, 128)[1].bfloat16())  # as a bf16 model stores them


@pytest.mark.parametrize("kind", ["normal", "heavy-tailed", "zero groups", "far from zero", "constant groups"])
def test_the_grid_covers_each_group_and_costs_little_accuracy(kind):
    weight = weights(kind)
    values, scales = stored_values(weight, 128)
    assert ((values - weight).abs() <= scales * (1 + 1e-6)).all()  # no weight clipped by more than a step
    error = (values - weight).pow(2).mean().sqrt()
    assert error <= 1.15 * (plain_minmax_int4(weight, 128) - weight).pow(2).mean().sqrt() + 1e-9


@pytest.mark.parametrize("kind", ["far from zero", "constant groups"])
def test_a_layer_the_grid_would_cost_accuracy_is_quantised_plainly(kind):
    weight = weights(kind)  # the grid, which must reach zero in 15 steps, would be 5-150x coarser
    values, _ = stored_values(weight, 128)
    assert not on_bf16_grid(quantize_int4(weight, 128)[1])
    assert torch.allclose(values, plain_minmax_int4(weight, 128), atol=1e-6)


def test_scales_and_zeros_off_the_grid_are_told_apart():
    scales_zeros = quantize_int4(weights("normal"), 128)[1]
    assert on_bf16_grid(scales_zeros)
    odd_scale, odd_zero, far_zero = scales_zeros.clone(), scales_zeros.clone(), scales_zeros.clone()
    odd_scale[0, 0, 0] *= 1.1  # 5 significant bits or more
    odd_zero[0, 0, 1] += odd_zero[0, 0, 0] / 2  # zero not a whole number of steps
    far_zero[0, 0, 1] = 9 * far_zero[0, 0, 0]  # codes would need more than 4 bits
    assert not any(on_bf16_grid(t) for t in (odd_scale, odd_zero, far_zero))


def long_and_short(layer: Int4Linear, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    long = layer(x)  # enough rows to dequantise
    short = torch.cat([layer(x[i:i + 8]) for i in range(0, len(x), 8)])  # the int4 kernel
    return long, short


def test_a_long_bf16_forward_multiplies_by_the_weights_the_kernel_uses(monkeypatch):
    monkeypatch.setattr(int4, "DEQUANT_BF16", True)
    torch.manual_seed(5)
    layer = Int4Linear.from_weight(torch.randn(128, 256, dtype=torch.bfloat16) * 0.05, 128)
    x = torch.randn(DEQUANT_ROWS + 8, 256, dtype=torch.bfloat16)
    long, short = long_and_short(layer, x)
    weight = dequantize_int4_cpu(layer.weight, layer.scales_zeros, 128, 128, 256)
    assert torch.equal(long, F.linear(x, weight.bfloat16()))  # the bf16 matmul was taken
    in_bf16 = dequantize_int4_cpu(layer.weight, layer.scales_zeros, 128, 128, 256, torch.bfloat16)
    assert torch.equal(in_bf16.float(), weight)  # ...over the very values, dequantised in bf16 exactly
    assert (long.float() - short.float()).abs().max() <= 1e-2 * short.float().abs().max()


def test_a_layer_off_the_grid_keeps_the_fp32_matmul(monkeypatch):
    monkeypatch.setattr(int4, "DEQUANT_BF16", True)
    torch.manual_seed(6)
    layer = Int4Linear.from_weight(torch.randn(128, 256, dtype=torch.bfloat16) * 0.05, 128)
    with torch.no_grad():
        layer.scales_zeros[..., 0] *= 1.1  # as a checkpoint quantised before the grid might hold
    x = torch.randn(DEQUANT_ROWS, 256, dtype=torch.bfloat16)
    weight = dequantize_int4_cpu(layer.weight, layer.scales_zeros, 128, 128, 256)
    assert torch.equal(layer(x), F.linear(x.float(), weight).bfloat16())
