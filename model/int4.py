"""Group-wise int4 weights on ATen's int4 kernels, on a grid that bf16 holds exactly.

``quantize_int4`` stores a weight row by groups of ``group`` inputs as codes q in 0..15 with a
scale s and a zero z per group, read by ATen's kernels as (q - 8) * s + z. The grid is chosen
so that every such value is exactly a bf16 number: s has at most 4 significant bits (rounded
up from the group's range / 15) and z = c * s with an integer c in [-7, 8], so each weight is an
integer of at most 4 bits times s (8 bits in all). Its error is that of plain min/max int4 within
a few per cent (RMS 2.10e-3 vs 2.00e-3 on N(0, 0.02) weights); a layer where it would cost more
than ``GRID_COST`` times (groups far from zero, which the grid must reach) is stored plainly.
``on_bf16_grid`` tells from the scales and zeros alone whether a layer is on the grid
(checkpoints saved before it are not; packs tell the two apart by the scales they hash).

``Int4Linear`` multiplies by ``torch._weight_int4pack_mm_for_cpu`` (CUDA:
``torch._weight_int4pack_mm`` on its own tiles, where K is a multiple of ``CUDA_K_TILE``; a
layer with another K keeps the CPU packing there and is dequantised per call). Checkpoints
always hold the CPU packing (``portable_weight``; ``codes_by_kernel`` reads any layout back
through the device's kernel) with its block of rows (``cpu_int4_block``: ATen packs in blocks of
64 rows on AVX-512, 32 on AVX2), and ``to_device_layout`` repacks a loaded layer for this
machine's blocks or for CUDA. A one-row product (decode) goes to ``model.int4_gemv``'s kernel for
its dtype where one is ready (bf16 or fp32: the same products, summed in another order). ATen's
kernel is compute-bound, so from ``DEQUANT_ROWS`` rows (a prefill chunk) a CPU layer dequantises
its weight (``dequantize_int4_cpu``, reading ATen's CPU packing, checked once per process) into one
matmul: fp32 (1.3x the kernel at 256 rows, 1.85x at 1,024 on an Intel Xeon), or, on CPUs where bf16
matmuls are the fast ones (``DEQUANT_BF16``: AMD with avx512_bf16, 2.0-2.4x the fp32 matmul at 512
rows of h-350m's shapes), bf16 when the activations are bf16 and the layer is on the grid: the same
weight values either way, so a token's result does not depend on how many rows share its forward
beyond summation order. Knows torch only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from feldspar.model import int4_gemv
from feldspar.model.cpu import cpu_flags, cpu_vendor
from feldspar.model.int4_packing import cpu_int4_block, cpu_int4_layout_known, unpack_int4_cpu

__all__ = ["Int4Linear", "cpu_int4_block", "cpu_int4_layout_known", "dequantize_int4_cpu", "int4_group",
           "quantize_int4", "unpack_int4_cpu"]

CUDA_INNER_K_TILES = 8  # torch._convert_weight_to_int4pack: [N / 8, K / (tiles * 16), 32, tiles / 2] int32
CUDA_K_TILE = CUDA_INNER_K_TILES * 16  # CUDA's kernel takes K in multiples of this; other layers stay portable
DEQUANT_ROWS = 256  # CPU int4: from this many rows a forward dequantises into one matmul
INT4_GROUPS = (128, 64, 32)
GRID_COST = 1.15  # the bf16 grid's RMS error may be this many times plain int4's (measured ~1.05)
# bf16 GEMM 2x fp32 here (AMD EPYC, avx512_bf16); slower than fp32 on the Intel Xeon measured without AMX
DEQUANT_BF16 = cpu_vendor() == "AuthenticAMD" and "avx512_bf16" in cpu_flags()


def int4_group(in_features: int, wanted: int = 128) -> int | None:
    """The largest supported group size <= ``wanted`` dividing ``in_features`` (None: none does)."""
    return next((g for g in INT4_GROUPS if g <= wanted and in_features % g == 0), None)


def _four_bits(value: torch.Tensor, up: int = 0) -> torch.Tensor:
    """``value`` rounded up to 4 significant bits, then ``up`` such steps further."""
    fraction, exponent = torch.frexp(value)  # value = fraction * 2^exponent, fraction in [0.5, 1)
    return torch.ldexp((torch.ceil(fraction * 16) + up) / 16, exponent)


def quantize_int4(weight: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric group-wise int4 as ATen's kernels read it: (codes 0..15 int32 [N, K],
    scales_and_zeros [K/group, N, 2]); a weight is (q - 8) * scale + zero. On the bf16 grid
    (module docstring) unless that costs over ``GRID_COST`` times the RMS error of plain min/max
    int4 (a layer whose groups sit far from zero): then plain, and its prefill stays fp32."""
    w = weight.detach().float().reshape(weight.shape[0], -1, group)
    low, high = w.amin(dim=-1, keepdim=True), w.amax(dim=-1, keepdim=True)
    plain_scales = ((high - low) / 15).clamp(min=1e-8)
    choices = [_encode(w, *_grid(low, high, plain_scales)), _encode(w, plain_scales, low + 8 * plain_scales)]
    _, q, scales, zeros = choices[0] if choices[0][0] <= GRID_COST * choices[1][0] else choices[1]
    scales_zeros = torch.stack([scales.squeeze(-1), zeros.squeeze(-1)], dim=-1).transpose(0, 1).contiguous()
    return q.to(torch.int32).reshape(weight.shape), scales_zeros


def _encode(w: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(RMS error, codes, scales, zeros) of groups ``w`` [N, K/group, group] on one grid."""
    q = torch.round((w - zeros) / scales + 8).clamp(0, 15)
    return ((q - 8) * scales + zeros - w).pow(2).mean().sqrt(), q, scales, zeros


def _grid(low: torch.Tensor, high: torch.Tensor, plain_scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scales, zeros) on the bf16 grid for groups spanning [low, high]: the range / 15 rounded up
    to 4 bits; a group the grid cannot centre on to within half a step takes the next larger
    scales, up to a few, then one that surely covers it (largest |weight| / 7)."""
    scales = _four_bits(plain_scales)
    for step in range(9):
        centre = torch.round((low + high) / (2 * scales) + 0.5).clamp(-7, 8)
        covered = ((centre - 8) * scales <= low + scales / 2) & ((centre + 7) * scales >= high - scales / 2)
        if bool(covered.all()):
            break
        wider = _four_bits(scales, up=1) if step < 8 else _four_bits((torch.maximum(-low, high) / 7).clamp(min=1e-8))
        scales = torch.where(covered, scales, wider)
    centre = torch.round((low + high) / (2 * scales) + 0.5).clamp(-7, 8)
    return scales, centre * scales


def on_bf16_grid(scales_zeros: torch.Tensor) -> bool:
    """Whether every (q - 8) * scale + zero of these groups is a bf16 number (see ``quantize_int4``)."""
    scales, zeros = scales_zeros.float().unbind(-1)
    fraction, _ = torch.frexp(scales)
    centre = zeros / scales
    return bool(((fraction * 16) == torch.round(fraction * 16)).all()
                and (centre == torch.round(centre)).all() and (centre >= -7).all() and (centre <= 8).all())


def _pack_int4(q: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Codes [N, K] packed for ``device``: CUDA's tiles where its kernel takes K, else the CPU
    packing (which checkpoints hold, with its ``cpu_int4_block``), on ``device``."""
    if device.type == "cuda" and q.shape[1] % CUDA_K_TILE == 0:
        packed = (q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8)
        return torch._convert_weight_to_int4pack(packed.to(device), CUDA_INNER_K_TILES)
    return torch._convert_weight_to_int4pack_for_cpu(q.to("cpu", torch.int32), 1).to(device)


def codes_by_kernel(weight: torch.Tensor, group: int, out_features: int, in_features: int) -> torch.Tensor:
    """The codes 0..15 [N, K] (int32) of a packed weight in any layout, read through the device's
    own int4 kernel: with every scale 1 and zero 8 each weight is its code, and the identity as
    input returns W^T (exact: bf16 holds 0..15)."""
    eye = torch.eye(in_features, dtype=torch.bfloat16, device=weight.device)
    scales_zeros = torch.ones(in_features // group, out_features, 2, dtype=torch.bfloat16, device=weight.device)
    scales_zeros[..., 1] = 8
    mm = torch._weight_int4pack_mm if weight.is_cuda else torch._weight_int4pack_mm_for_cpu
    return mm(eye, weight, group, scales_zeros).t().round().to(torch.int32)


def dequantize_int4_cpu(packed: torch.Tensor, scales_zeros: torch.Tensor, group: int, out_features: int,
                        in_features: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An int4 CPU weight [N, K]: (q - 8) * scale + zero, group by group, in fp32; or in bf16
    as (q + zero / scale - 8) * scale, exact only for a layer ``on_bf16_grid``."""
    q = unpack_int4_cpu(packed, out_features, in_features).view(out_features, -1, group)
    scales, zeros = scales_zeros.float().transpose(0, 1).contiguous().unbind(-1)  # [N, K / group]
    if dtype == torch.bfloat16:
        steps = (zeros / scales - 8).to(dtype)[..., None]
        return q.to(dtype).add_(steps).mul_(scales.to(dtype)[..., None]).view(out_features, in_features)
    offsets = zeros - 8 * scales
    return q.float().mul_(scales[..., None]).add_(offsets[..., None]).view(out_features, in_features)


def _int4_shape(out_features: int, in_features: int, device: torch.device | None) -> tuple[int, ...]:
    if device is not None and torch.device(device).type == "cuda" and in_features % CUDA_K_TILE == 0:
        return (out_features // 8, in_features // CUDA_K_TILE, 32, CUDA_INNER_K_TILES // 2)
    return (out_features, in_features // 2)


class Int4Linear(nn.Module):
    """y = x @ W^T + b with W stored as packed int4 groups (scale and zero per group)."""

    def __init__(self, in_features: int, out_features: int, bias: bool, dtype: torch.dtype, group: int,
                 device=None) -> None:
        super().__init__()
        self.in_features, self.out_features, self.group = in_features, out_features, group
        shape = _int4_shape(out_features, in_features, device)
        self.register_buffer("weight", torch.empty(shape, dtype=torch.int32 if len(shape) == 4 else torch.uint8,
                                                   device=device))
        self.register_buffer("scales_zeros", torch.empty(in_features // group, out_features, 2, dtype=dtype,
                                                         device=device))
        self.register_buffer("bias", torch.empty(out_features, dtype=dtype, device=device) if bias else None)

    @classmethod
    def from_weight(cls, weight: torch.Tensor, group: int, bias: torch.Tensor | None = None) -> "Int4Linear":
        module = cls(weight.shape[1], weight.shape[0], bias is not None, weight.dtype, group, weight.device)
        q, scales_zeros = quantize_int4(weight, group)
        module.weight = _pack_int4(q, weight.device)
        module.scales_zeros.copy_(scales_zeros)
        if bias is not None:
            module.bias.copy_(bias.detach())
        return module

    def portable_weight(self) -> torch.Tensor:
        """The weight in the CPU packing (what checkpoints hold), on this layer's device."""
        if self.weight.dim() == 2:
            return self.weight
        codes = codes_by_kernel(self.weight, self.group, self.out_features, self.in_features)
        return _pack_int4(codes, torch.device("cpu")).to(self.weight.device)

    def to_device_layout(self, saved_block: int | None = None) -> None:
        """After loading a checkpoint (the CPU packing of the machine that saved it, in blocks of
        ``saved_block`` rows; None: this machine's): repack for this machine's CPU packing where the
        blocks differ, and for CUDA's kernel where it takes K."""
        if self.weight.dim() != 2:
            return
        block = saved_block or cpu_int4_block()
        cuda_tiles = self.weight.is_cuda and self.in_features % CUDA_K_TILE == 0
        if block is not None and (cuda_tiles or block != cpu_int4_block()):
            codes = unpack_int4_cpu(self.weight, self.out_features, self.in_features, block)
            self.weight = _pack_int4(codes.to(torch.int32), self.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        scales_zeros = self.scales_zeros.to(x.dtype)
        if rows.shape[0] == 1 and x.device.type == "cpu" and int4_gemv.takes(rows, self.out_features, self.group):
            return self._finish(int4_gemv.gemv(rows, self.weight, scales_zeros, self.group), x)
        if x.device.type == "cuda" and self.weight.dim() == 4:  # pragma: no cover - no GPU here
            out = torch._weight_int4pack_mm(rows, self.weight, self.group, scales_zeros)
        elif x.device.type == "cuda":  # pragma: no cover - a K CUDA's kernel does not take
            weight = dequantize_int4_cpu(self.weight, self.scales_zeros, self.group, self.out_features,
                                         self.in_features)
            out = F.linear(rows, weight.to(x.dtype))
        elif rows.shape[0] >= DEQUANT_ROWS and cpu_int4_layout_known():
            bf16 = x.dtype == torch.bfloat16 and DEQUANT_BF16 and on_bf16_grid(self.scales_zeros)
            weight = dequantize_int4_cpu(self.weight, self.scales_zeros, self.group, self.out_features,
                                         self.in_features, torch.bfloat16 if bf16 else torch.float32)
            out = F.linear(rows, weight) if bf16 else F.linear(rows.float(), weight).to(x.dtype)
        else:
            out = torch._weight_int4pack_mm_for_cpu(rows, self.weight, self.group, scales_zeros)
        return self._finish(out, x)

    def _finish(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)

