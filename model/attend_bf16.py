"""One query token's attention over a bf16 cache: Feldspar's AVX-512 BF16 kernel, built on this machine.

Contract: ``ready()`` builds (once per machine, in the library ``model.int8_gemv`` builds), loads
and checks ``torch.ops.feldspar.attend_bf16(q, keys, values, scale)`` the first time it is asked
and says whether the op may be used. For q bf16 [1, H, 1, D] and keys, values bf16 [1, KV, n, D]
(views with room behind them are fine; H a multiple of KV, D at most 256) it returns bf16
[1, H, 1, D]: softmax(q k^T * scale) v with the query heads of a group sharing a KV head, in
fp32 on the bf16 numbers (exact products, fp32 sums, ATen's fp32 softmax), rounded once to
bf16: what ``decode_step.attend`` computes with two fp32 batched matmuls over fp32 copies of
the cache, up to the order of the sums. Ready where the CPU has AVX-512 BF16,
``FELDSPAR_ATTEND_BF16`` is not off, the int8 kernel's library builds and a check against that
reference passes; otherwise (one warning line when the check fails) the matmuls do it.

Why: the fp32 copies write and read the cache twice more each token (10 bytes per cached
number instead of 2); at thousands of cached tokens that is most of a bf16 decode step's
attention. Knows torch only.
"""

from __future__ import annotations

import functools
import warnings

import torch

from feldspar.model import int8_gemv
from feldspar.model.cpu import cpu_flags

ENV = "FELDSPAR_ATTEND_BF16"
INSTRUCTIONS = int8_gemv.INSTRUCTIONS | {"avx512_bf16"}


def wanted() -> bool:
    """The CPU has the instructions and the user has not turned the kernel off."""
    return int8_gemv.enabled(ENV, INSTRUCTIONS)


def describe() -> str:
    """Where the decode step attends over a bf16 cache by matmuls, what does it (builds nothing)."""
    if not INSTRUCTIONS <= cpu_flags():
        return "fp32 matmuls over copies of the cache (no AVX-512 BF16 for Feldspar's kernel)"
    if not wanted():
        return f"fp32 matmuls over copies of the cache (Feldspar's kernel turned off by {ENV})"
    return "Feldspar's AVX-512 BF16 kernel on the bf16 cache"


def ready() -> bool:
    """Whether ``attend`` may be called (builds and checks on the first call that wants it)."""
    return wanted() and _loaded()


@functools.cache
def _loaded() -> bool:
    if not int8_gemv.prepare():
        return False
    try:
        _check()
    except Exception as exc:  # noqa: BLE001 - any failure means the matmuls do it all
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        warnings.warn(f"bf16 attention kernel not used ({first[:200]}); fp32 matmuls do decode attention",
                      RuntimeWarning, stacklevel=3)
        return False
    return True


def reference(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float) -> torch.Tensor:
    """The same attention by fp32 batched matmuls over fp32 copies (``decode_step.attend``'s way)."""
    rows = q.float().view(keys.shape[1], -1, q.shape[-1])
    weights = torch.softmax(torch.bmm(rows, keys[0].float().transpose(1, 2)) * scale, dim=-1)
    return torch.bmm(weights, values[0].float()).view_as(q).to(q.dtype)


def _check() -> None:
    """Within a bf16 rounding of ``reference`` on a grouped shape with a partial vector of D."""
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, 6, 1, 80, generator=gen).bfloat16()
    room = torch.randn(2, 2, 40, 80, generator=gen).bfloat16()  # keys and values in a buffer with room
    keys, values = room[0:1, :, :33], room[1:2, :, :33]
    expected = reference(q, keys, values, 0.11).float()
    got = attend(q, keys, values, 0.11).float()
    if not torch.allclose(got, expected, rtol=2 ** -7, atol=2 ** -7 * expected.abs().max().item()):
        raise RuntimeError("attend_bf16 disagrees with the fp32 matmuls")


def attend(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float) -> torch.Tensor:
    """``reference(q, keys, values, scale)`` by the kernel (``ready()`` only)."""
    return torch.ops.feldspar.attend_bf16(q, keys, values, scale)
