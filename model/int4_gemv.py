"""The one-row int4 matmuls of a decode step: Feldspar's two CPU kernels, built on this machine.

Contract: ``prepare()`` builds and checks the kernels this CPU can run and returns whether any
is ready; ``takes(x, out_features, group)`` says whether ``gemv(x, w, scales_zeros, group)`` does a
one-row product with activations of ``x``'s dtype here. For w an [N, K] weight packed by
``torch._convert_weight_to_int4pack_for_cpu`` and ``scales_zeros`` [K / group, N, 2] in x's
dtype, ``gemv`` returns x @ W^T [1, N] as ``torch._weight_int4pack_mm_for_cpu`` computes it:

- **bf16** x (model/csrc/int4_gemv.cpp; AVX-512 BF16 and VBMI): fp32 sums of exact products,
  one rounding to bf16, up to the order of the sums (``vdpbf16ps`` on codes turned into bf16);
- **fp32** x (model/csrc/int4_gemv_avx2.cpp; AVX2, so every AVX-512 CPU too): fp32 products
  and sums, in another order (the codes of 32 bytes read as eight 32-bit lanes, each nibble
  masked in place, converted and multiplied in by ``vfmadd``; no byte shuffles), for either of ATen's
  CPU packings (``BLOCK``: 32 rows with AVX2, 64 with AVX-512).

``int4.Int4Linear`` sends its one-row products there when ``takes``, everything else to ATen's
kernels. The kernels are in the library ``model.int8_gemv`` builds (one build per machine and
torch). ``FELDSPAR_INT4_GEMV=off`` turns both off; a kernel whose check fails is not used (one
warning line) and ATen's kernel does its products.

Why: ATen's one-row int4 product is compute-bound on the AMD EPYCs measured: with bf16
activations it reads weights at 16-19 GB/s (the bf16 kernel: 25-41 GB/s, 1.5-2.1x); with fp32
activations on an AVX2-only EPYC at 0.3-0.5 GB/s, which made int4 decode there 0.05x
llama.cpp's Q4_0 (the fp32 kernel: docs/benchmarks.md). Knows torch only.
"""

from __future__ import annotations

import warnings

import torch

from feldspar.model import int8_gemv
from feldspar.model.cpu import cpu_flags
from feldspar.model.int4_packing import cpu_int4_block

ENV = "FELDSPAR_INT4_GEMV"
INSTRUCTIONS = {  # what each kernel is compiled for, by the activations' dtype
    torch.bfloat16: int8_gemv.INSTRUCTIONS | {"avx512_bf16", "avx512vbmi"},
    torch.float32: int8_gemv.AVX2_INSTRUCTIONS,
}
KERNEL = {torch.bfloat16: "AVX-512 BF16", torch.float32: "AVX2 fp32"}
ROWS_PER = 16  # both kernels take N in multiples of this
READY: frozenset[torch.dtype] = frozenset()  # the activations' dtypes a ready kernel takes
BLOCK = 32  # rows per block of this machine's CPU int4 packing (``cpu_int4_block``), set by prepare
_checked: dict[torch.dtype, bool] = {}


def capable() -> frozenset[torch.dtype]:
    """The dtypes whose kernel this CPU can run."""
    return frozenset(dtype for dtype, needs in INSTRUCTIONS.items() if needs <= cpu_flags())


def wanted() -> frozenset[torch.dtype]:
    """The dtypes whose kernel the CPU can run and the user has not turned off."""
    return frozenset(d for d in capable() if int8_gemv.enabled(ENV, INSTRUCTIONS[d]))


def describe() -> str:
    """What does this machine's one-row int4 products, in a few words (builds nothing)."""
    if not capable():
        return "int4 decode matmuls by ATen's kernel (no AVX2 for Feldspar's kernels)"
    if not wanted():
        return f"int4 decode matmuls by ATen's kernel (Feldspar's kernels turned off by {ENV})"
    parts = []
    for dtype in (torch.float32, torch.bfloat16):
        name = "fp32" if dtype == torch.float32 else "bf16"
        if dtype not in capable():
            parts.append(f"{name} by ATen's kernel (no AVX-512 BF16 and VBMI for Feldspar's)")
        elif _checked.get(dtype) is False:
            parts.append(f"{name} by ATen's kernel (Feldspar's failed to build or check here)")
        else:
            parts.append(f"{name} by Feldspar's {KERNEL[dtype]} kernel")
    return "int4 decode matmuls: " + ", ".join(parts) + " (built once per machine)"


def prepare() -> bool:
    """Build (once per machine, with the int8 kernel), load and check the kernels; True if any is ready."""
    global READY, BLOCK
    BLOCK = cpu_int4_block() or 0
    built = bool(wanted()) and BLOCK in (32, 64) and int8_gemv.prepare()
    READY = frozenset(d for d in wanted() if built and _passes_check(d))
    return bool(READY)


def takes(x: torch.Tensor, out_features: int, group: int) -> bool:
    """Whether a ready kernel does this one-row product (x [.., K] of its dtype, N a multiple of
    16, the group a multiple of 4)."""
    return x.dtype in READY and out_features % ROWS_PER == 0 and group % 4 == 0


def _passes_check(dtype: torch.dtype) -> bool:
    if dtype not in _checked:
        try:
            _check(dtype)
            _checked[dtype] = True
        except Exception as exc:  # noqa: BLE001 - any failure means ATen's kernel does those products
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            warnings.warn(f"int4 {KERNEL[dtype]} decode kernel not used ({first[:200]}); ATen's kernel does "
                          "those int4 matmuls", RuntimeWarning, stacklevel=3)
            _checked[dtype] = False
    return _checked[dtype]


def _check(dtype: torch.dtype) -> None:
    """Within a rounding of ATen's kernel (bf16: one bf16 rounding; fp32: summation order) on a
    shape with full blocks (64 and 32 rows) and a tail."""
    gen = torch.Generator().manual_seed(0)
    group, codes = 64, torch.randint(0, 16, (176, 256), generator=gen, dtype=torch.int32)
    weight = torch._convert_weight_to_int4pack_for_cpu(codes, 1)
    scales = (torch.rand(256 // group, 176, generator=gen) * 0.01 + 1e-3)
    zeros = torch.randn(256 // group, 176, generator=gen) * 0.01
    scales_zeros = torch.stack([scales, zeros], dim=-1).to(dtype)
    x = torch.randn(1, 256, generator=gen).to(dtype)
    expected = torch._weight_int4pack_mm_for_cpu(x, weight, group, scales_zeros).float()
    got = gemv(x, weight, scales_zeros, group).float()
    step = 2 ** -7 if dtype == torch.bfloat16 else 1e-5
    if not torch.allclose(got, expected, rtol=step, atol=1e-6 + step * expected.abs().max().item()):
        raise RuntimeError(f"int4 {KERNEL[dtype]} kernel disagrees with ATen's int4 kernel")


def gemv(x: torch.Tensor, weight: torch.Tensor, scales_zeros: torch.Tensor, group: int,
         block: int | None = None) -> torch.Tensor:
    """The one-row product ``x`` [1, K] by the kernel for x's dtype (``takes`` only); ``block``:
    the fp32 kernel's packing (default this machine's; the bf16 kernel reads blocks of 64)."""
    if x.dtype == torch.float32:
        return torch.ops.feldspar.int4_gemv_f32(x, weight, scales_zeros, group, block or BLOCK)
    return torch.ops.feldspar.int4_gemv(x, weight, scales_zeros, group)
