"""The tensor-only kernels of the one-token decode step (``model.decode_step``).

Plain functions of tensors, no modules inside, following ``modeling_granitemoehybrid``'s
single-token paths: Granite's RMSNorm, residual-plus-RMSNorm, and the Mamba2 update between
its two projections (conv-state roll, depthwise conv, SiLU, dt softplus, the selective state
update read out through the old state then done in one in-place pass, D skip, gated RMSNorm;
the last two, ``skip_gated_norm``, are the prefill's too).
``torch.compile`` fuses them inside the decode step's regions; eager they are the reference
maths. Knows torch only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Granite's RMSNorm: normalise in fp32, scale by ``weight`` in ``x``'s dtype."""
    return weight * F.rms_norm(x.float(), (x.shape[-1],), eps=eps).to(x.dtype)


def residual_norm(h: torch.Tensor, x: torch.Tensor, scale: float, weight: torch.Tensor,
                  eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``h + x * scale`` and its RMSNorm (the residual then the next sub-layer's input)."""
    h = h + x * scale
    return h, rms_norm(h, weight, eps)


def ssm_update(zxbcdt: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor,
               conv_w: torch.Tensor, conv_b: torch.Tensor | None, dt_bias: torch.Tensor, A: torch.Tensor,
               D: torch.Tensor, norm_w: torch.Tensor, eps: float, dims: tuple[int, ...]) -> torch.Tensor:
    """The Mamba2 single-token update between ``in_proj`` and ``out_proj``.

    ``zxbcdt`` is the in_proj output [gate | x B C | dt] of one token; ``conv_state``
    [1, conv_dim, kernel] and ``ssm_state`` [1, heads, head_dim, size] advance in place.
    ``dims`` = (intermediate, conv_dim, heads, head_dim, groups, size). The readout and the
    state update run in fp32, heads leading every shape (B and C expanded per head, a few KB).
    """
    inter, conv_dim, heads, head_dim, groups, size = dims
    dtype = zxbcdt.dtype
    gate, xbc, dt = zxbcdt.split([inter, conv_dim, heads], dim=-1)
    window = torch.cat([conv_state[0, :, 1:], xbc[:, None].to(conv_state.dtype)], dim=-1)
    conv_state[0].copy_(window)
    conv = (window.to(conv_w.dtype) * conv_w).sum(-1)
    if conv_b is not None:
        conv = conv + conv_b
    xbc = F.silu(conv).to(dtype)
    x, B, C = xbc.split([inter, groups * size, groups * size], dim=-1)
    dt = F.softplus(dt + dt_bias.to(dtype))
    per_group = heads // groups
    dA = torch.exp(dt.float() * A).view(groups, per_group, 1, 1)
    dtx = (dt[:, None] * x.view(heads, head_dim)).view(groups, per_group, head_dim, 1)
    # heads lead (a compiled loop nest parallelises its outer dimension; groups is often 1)
    dA, dtx = dA.view(heads, 1, 1), dtx.view(heads, head_dim, 1)
    B = B.view(groups, 1, 1, size).expand(groups, per_group, 1, size).reshape(heads, 1, size)
    C = C.float().view(groups, 1, size, 1).expand(groups, per_group, size, 1).reshape(heads, size, 1)
    state = ssm_state.view(heads, head_dim, size)
    # read out through the old state, (dA state + dtx B) C = dA (state C) + dtx (B C), so the
    # update below is one in-place pointwise pass over the state
    y = dA.view(heads, 1) * torch.bmm(state, C).view(heads, head_dim)
    y = y + dtx.view(heads, head_dim) * torch.bmm(B.float(), C).view(heads, 1)
    state.mul_(dA).addcmul_(dtx, B)
    y = skip_gated_norm(y.view(1, heads, head_dim), x.view(1, heads, head_dim), D, gate.view(1, -1), groups, eps)
    return norm_w * y.view(1, 1, -1).to(dtype)


def skip_gated_norm(y: torch.Tensor, x: torch.Tensor, D: torch.Tensor, gate: torch.Tensor, groups: int,
                    eps: float) -> torch.Tensor:
    """The Mamba2 mixer's D skip then its gated RMSNorm over ``groups`` channel groups, in fp32,
    before the norm's weight: ``y`` (fp32) and ``x`` [T, heads, head_dim], ``D`` [heads], ``gate``
    [T, heads * head_dim] -> [T, heads * head_dim]. The decode step's and the prefill's."""
    length = y.shape[0]
    hidden = (y + x * D[:, None]).view(length, -1) * F.silu(gate.float())
    return F.rms_norm(hidden.view(length, groups, -1), (hidden.shape[-1] // groups,), eps=eps).view(length, -1)
