"""The chunked SSD (Mamba2) scan's maths: pure functions on fp32 tensors.

Shapes: ``x`` [T, H, P] for T = nc whole chunks of ``chunk`` tokens, ``dt`` [T, H] (after
softplus), ``A`` [H], ``B``/``C`` [T, N] (one group, shared by all heads), states [N, H*P]
(heads and head dims along the columns, so that C·state and Bᵀ·x are one matmul over all heads).
With ``a`` the cumulative log decay from a chunk's start (a_s = Σ_{t≤s} dt_t A, falling from
≤ 0 to the chunk's whole log decay ``a_end``) and S the state entering the chunk:

    y_l    = Σ_{s≤l} (C_l·B_s) e^{a_l − a_s} dt_s x_s  +  e^{a_l} C_l·S
    S_next = e^{a_end} S  +  Σ_s e^{a_end − a_s} dt_s B_sᵀ x_s

``chunk_parts`` computes everything that needs no state for all chunks at once (the first sum
as per-head [q, q] decay blocks, as the reference does); ``scan_chunks`` then carries the state
through the chunks in order: per chunk two matmuls over all heads and two fused multiply-adds.
Carrying the state chunk by chunk replaced an einsum over every pair of chunks whose operands
had to be permuted head-major and back (1.5-1.9x the scan alone, docs/benchmarks.md).
Decay weights below e^{LOG_DECAY_FLOOR} are floored there (left alone they underflow to
denormal floats, and arithmetic on denormals is tens of times slower on x86). Knows torch only.
"""

from __future__ import annotations

import torch

from feldspar.model import onednn_linear

# A weight of exp(-40) = 4e-18 instead of anything smaller, far under fp32's 6e-8 resolution.
LOG_DECAY_FLOOR = -40.0


def _decay(log_decay: torch.Tensor) -> torch.Tensor:
    """exp of a log-decay (<= 0), floored at ``LOG_DECAY_FLOOR`` so it never underflows."""
    return log_decay.clamp(min=LOG_DECAY_FLOOR).exp_()


def chunk_parts(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                chunk: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """What needs no state, for all chunks at once: ``inner`` [nc, H, q, P] (the sums within each
    chunk), ``weighted`` [nc, q, H*P] = e^{a_end − a_s} dt_s x_s, ``outer_scale`` [nc, q, H] = e^{a_l}
    and ``carry`` [nc, H*P] = e^{a_end} (each head's value repeated over its P columns)."""
    T, H, P = x.shape
    nc, N = T // chunk, B.shape[-1]
    x = (x * dt[..., None]).view(nc, chunk, H, P)
    Bv, Cv = B.reshape(nc, chunk, N), C.reshape(nc, chunk, N)
    acum = (dt * A).view(nc, chunk, H).transpose(1, 2).cumsum(-1)  # [nc, H, q]
    above = torch.ones(chunk, chunk, dtype=torch.bool, device=x.device).triu_(1)
    log_decay = (acum[..., :, None] - acum[..., None, :]).clamp_(min=LOG_DECAY_FLOOR)  # s -> l
    scores = log_decay.masked_fill_(above, float("-inf")).exp_().mul_(torch.bmm(Cv, Bv.transpose(1, 2))[:, None])
    inner = torch.matmul(scores, x.transpose(1, 2))  # [nc, H, q, P]
    total = acum[..., -1]  # [nc, H]
    weighted = (x * _decay(total[..., None] - acum).transpose(1, 2)[..., None]).view(nc, chunk, H * P)
    carry = _decay(total)[..., None].expand(nc, H, P).reshape(nc, H * P)
    return inner, weighted, _decay(acum).transpose(1, 2), carry


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for 2-D fp32 ``a`` and ``b``, by oneDNN where fp32 prefill matmuls use it
    (model/onednn_linear.py: 1.8x MKL's batched matmul at the scan's [64-128, 64-128] x
    [., H*P] shapes on the AMD EPYC measured, docs/benchmarks.md)."""
    return onednn_linear.onednn_linear(a, b.T, None) if onednn_linear.in_use() else a @ b


def scan_chunks(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                state: torch.Tensor, chunk: int, parts=chunk_parts) -> tuple[torch.Tensor, torch.Tensor]:
    """The scan over whole chunks: ``y`` [T, H, P] and the final state [N, H*P] from ``state``.

    ``parts`` computes ``chunk_parts`` (the caller passes it compiled or not); then the chunks run
    in order, each a matmul for its state's share of the output, one for its share of the next
    state and two fused multiply-adds."""
    inner, weighted, outer_scale, carry = parts(x, dt, A, B, C, chunk)
    nc, H, _, P = inner.shape
    Bv, Cv = B.reshape(nc, chunk, -1), C.reshape(nc, chunk, -1)
    y = x.new_empty(nc, chunk, H, P)
    for c in range(nc):
        outer = matmul(Cv[c], state).view(chunk, H, P)
        torch.addcmul(inner[c].transpose(0, 1), outer, outer_scale[c][..., None], out=y[c])
        state = torch.addcmul(matmul(Bv[c].T, weighted[c]), state, carry[c])
    return y.view(nc * chunk, H, P), state
