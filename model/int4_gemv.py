"""The one-row int4 matmul of a bf16 decode step: Feldspar's AVX-512 BF16 kernel, built on this machine.

Contract: ``prepare()`` makes ``torch.ops.feldspar.int4_gemv(x, w, scales_zeros, group)`` usable
and sets ``READY``; it returns whether it is. For x bf16 [1, K], w an [N, K] weight packed by
``torch._convert_weight_to_int4pack_for_cpu`` and bf16 ``scales_zeros`` [K / group, N, 2], it
returns bf16 [1, N]: what ``torch._weight_int4pack_mm_for_cpu`` computes (fp32 sums of exact
products, one rounding to bf16), up to the order of the sums. ``int4.Int4Linear`` sends its
bf16 one-row products (every int4 matmul of a decode step) there when ``READY``, everything
else to ATen's kernels. The kernel is in the library ``model.int8_gemv`` builds (one build per
machine and torch). Ready where the CPU also has AVX-512 BF16 and VBMI, ``FELDSPAR_INT4_GEMV``
is not off and a check against ATen's kernel passes; otherwise (one warning line when the
check fails) ATen's kernel does every int4 product.

Why: ATen's one-row int4 product is compute-bound on the AMD EPYC measured, reading weights
at 16-19 GB/s; this kernel turns two columns of codes into bf16 pairs with two byte shuffles
and two byte permutes and multiplies them by ``vdpbf16ps``, reading 25-41 GB/s on h-350m's
shapes (1.5-2.1x; docs/benchmarks.md). Knows torch only.
"""

from __future__ import annotations

import warnings

import torch

from feldspar.model import int8_gemv
from feldspar.model.cpu import cpu_flags

ENV = "FELDSPAR_INT4_GEMV"
INSTRUCTIONS = int8_gemv.INSTRUCTIONS | {"avx512_bf16", "avx512vbmi"}  # what the kernel is compiled for
READY = False
_checked: dict[str, bool] = {}


def wanted() -> bool:
    """The CPU has the instructions and the user has not turned the kernel off."""
    return int8_gemv.enabled(ENV, INSTRUCTIONS)


def describe() -> str:
    """What does this machine's bf16 one-row int4 products, in a few words (builds nothing)."""
    if not INSTRUCTIONS <= cpu_flags():
        return "int4 decode matmuls by ATen's kernel (no AVX-512 BF16 and VBMI for Feldspar's kernel)"
    if not wanted():
        return f"int4 decode matmuls by ATen's kernel (Feldspar's kernel turned off by {ENV})"
    if _checked.get("result") is False:
        return "int4 decode matmuls by ATen's kernel (Feldspar's kernel failed to build or check here)"
    return "bf16 int4 decode matmuls by Feldspar's AVX-512 BF16 kernel (built once per machine)"


def prepare() -> bool:
    """Build (once per machine, with the int8 kernel), load and check the kernel; returns ``READY``."""
    global READY
    READY = wanted() and int8_gemv.prepare() and _passes_check()
    return READY


def _passes_check() -> bool:
    if "result" not in _checked:
        try:
            _check()
            _checked["result"] = True
        except Exception as exc:  # noqa: BLE001 - any failure means ATen's kernel does it all
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            warnings.warn(f"int4 decode kernel not used ({first[:200]}); ATen's kernel does every int4 matmul",
                          RuntimeWarning, stacklevel=3)
            _checked["result"] = False
    return _checked["result"]


def _check() -> None:
    """Within a bf16 rounding of ATen's kernel, on a shape with full 64-row blocks and a tail."""
    gen = torch.Generator().manual_seed(0)
    group, codes = 64, torch.randint(0, 16, (176, 256), generator=gen, dtype=torch.int32)
    weight = torch._convert_weight_to_int4pack_for_cpu(codes, 1)
    scales = (torch.rand(256 // group, 176, generator=gen) * 0.01 + 1e-3)
    zeros = torch.randn(256 // group, 176, generator=gen) * 0.01
    scales_zeros = torch.stack([scales, zeros], dim=-1).bfloat16()
    x = torch.randn(1, 256, generator=gen).bfloat16()
    expected = torch._weight_int4pack_mm_for_cpu(x, weight, group, scales_zeros).float()
    got = gemv(x, weight, scales_zeros, group).float()
    if not torch.allclose(got, expected, rtol=2 ** -7, atol=1e-6 + 2 ** -7 * expected.abs().max().item()):
        raise RuntimeError("int4_gemv disagrees with ATen's int4 kernel")


def gemv(x: torch.Tensor, weight: torch.Tensor, scales_zeros: torch.Tensor, group: int) -> torch.Tensor:
    """``torch._weight_int4pack_mm_for_cpu(x, weight, group, scales_zeros)`` for one bf16 row (``READY`` only)."""
    return torch.ops.feldspar.int4_gemv(x, weight, scales_zeros, group)
