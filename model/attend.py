"""One query token's attention over the decode cache: Feldspar's CPU kernels, built on this machine.

Contract: ``ready(dtype)`` builds (once per machine, in the library ``model.int8_gemv``
builds), loads and checks the kernel for a cache of ``dtype`` the first time it is asked and
says whether ``attend`` may be called for it. For q [1, H, 1, D] and keys, values [1, KV, n, D]
of that dtype (views with room behind them are fine; H a multiple of KV, D at most 256) it
returns [1, H, 1, D] of the same dtype: softmax(q k^T * scale) v with the query heads of a
group sharing a KV head, in fp32 (ATen's fp32 softmax), what ``reference`` computes with two
fp32 batched matmuls, up to the order of the sums (and, for bf16, one rounding).

- fp32 (``torch.ops.feldspar.attend_f32``, model/csrc/attend_f32.cpp): AVX2 and FMA, D a
  multiple of 8. Why: the matmuls' shapes (one row per query head) read the cache at a fraction
  of the memory's speed; reading each key and value once for a group's heads measured 1.1-1.4
  vs 2.1-2.3 ms a token at 1K cached tokens, 2.1 vs 4.1 ms at 4K (int4 h-350m, AMD EPYC,
  profiled).
- bf16 (``torch.ops.feldspar.attend_bf16``, model/csrc/attend_bf16.cpp): AVX-512 BF16. Why:
  the matmuls need fp32 copies of the cache (10 bytes per cached number instead of 2); on an
  AMD EPYC the fused ATen kernel is slower still (``decode_step.BMM_ATTENTION_BF16``).

Each is ready where the CPU has its instructions, its switch (``ENV[dtype]``) is not off, the
library builds and a check against ``reference`` passes; otherwise (one warning line when the
check fails) the matmuls do it. Knows torch only.
"""

from __future__ import annotations

import functools
import warnings

import torch

from feldspar.model import int8_gemv
from feldspar.model.cpu import cpu_flags

ENV = {torch.float32: "FELDSPAR_ATTEND_F32", torch.bfloat16: "FELDSPAR_ATTEND_BF16"}
INSTRUCTIONS = {torch.float32: frozenset({"avx2", "fma"}),
                torch.bfloat16: int8_gemv.INSTRUCTIONS | {"avx512_bf16"}}
_OPS = {torch.float32: "attend_f32", torch.bfloat16: "attend_bf16"}
_NAMES = {torch.float32: "AVX2", torch.bfloat16: "AVX-512 BF16"}


def wanted(dtype: torch.dtype) -> bool:
    """The CPU has the instructions of ``dtype``'s kernel and the user has not turned it off."""
    return dtype in ENV and int8_gemv.enabled(ENV[dtype], INSTRUCTIONS[dtype])


def describe(dtype: torch.dtype) -> str:
    """What attends over a ``dtype`` cache where the decode step does it by matmuls (builds nothing)."""
    copies = "" if dtype == torch.float32 else " over fp32 copies of the cache"
    if not INSTRUCTIONS[dtype] <= cpu_flags():
        return f"fp32 matmuls{copies} (no {_NAMES[dtype]} for Feldspar's kernel)"
    if not wanted(dtype):
        return f"fp32 matmuls{copies} (Feldspar's kernel turned off by {ENV[dtype]})"
    return f"Feldspar's {_NAMES[dtype]} kernel on the {'fp32' if dtype == torch.float32 else 'bf16'} cache"


def fits(q: torch.Tensor, keys: torch.Tensor) -> bool:
    """Whether the kernels take these shapes and layouts (else ``reference`` does it)."""
    heads, kv, d = q.shape[1], keys.shape[1], q.shape[-1]
    return (q.is_cpu and heads % kv == 0 and d <= 256 and keys.stride(-1) == 1
            and (q.dtype != torch.float32 or d % 8 == 0))


def ready(dtype: torch.dtype) -> bool:
    """Whether ``attend`` may be called for a ``dtype`` cache (builds and checks on the first call)."""
    return wanted(dtype) and _loaded(dtype)


@functools.cache
def _loaded(dtype: torch.dtype) -> bool:
    if not int8_gemv.prepare():
        return False
    try:
        _check(dtype)
    except Exception as exc:  # noqa: BLE001 - any failure means the matmuls do it all
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        warnings.warn(f"{_OPS[dtype]} attention kernel not used ({first[:200]}); fp32 matmuls do decode attention",
                      RuntimeWarning, stacklevel=3)
        return False
    return True


def reference(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float) -> torch.Tensor:
    """The same attention by fp32 batched matmuls (over fp32 copies of a bf16 cache)."""
    rows = q.float().view(keys.shape[1], -1, q.shape[-1])
    weights = torch.softmax(torch.bmm(rows, keys[0].float().transpose(1, 2)) * scale, dim=-1)
    return torch.bmm(weights, values[0].float()).view_as(q).to(q.dtype)


def _check(dtype: torch.dtype) -> None:
    """Within a rounding of ``reference`` on a grouped shape, with a cache that has room behind it."""
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, 6, 1, 80, generator=gen).to(dtype)
    room = torch.randn(2, 2, 40, 80, generator=gen).to(dtype)  # keys and values in a buffer with room
    keys, values = room[0:1, :, :33], room[1:2, :, :33]
    expected = reference(q, keys, values, 0.11).float()
    got = attend(q, keys, values, 0.11).float()
    tolerance = 2 ** -7 if dtype == torch.bfloat16 else 1e-5
    if not torch.allclose(got, expected, rtol=tolerance, atol=tolerance * expected.abs().max().item()):
        raise RuntimeError(f"{_OPS[dtype]} disagrees with the fp32 matmuls")


def attend(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float) -> torch.Tensor:
    """``reference(q, keys, values, scale)`` by the kernel for ``q``'s dtype (``ready`` only)."""
    return getattr(torch.ops.feldspar, _OPS[q.dtype])(q, keys, values, scale)
