"""A faster Mamba2 mixer forward for prefill: the chunked SSD scan as a few batched matmuls per chunk.

Contract: ``active(model)`` is a context manager; inside it, every Mamba2 mixer of a Granite 4.0
model (``GraniteMoeHybridMambaLayer``) that is asked to consume more than one token on CPU with
a cache runs ``mixer_forward`` instead of transformers' reference ``torch_forward``; outside it
(``model.generate``, other threads, FELDSPAR_PREFILL=ref) every mixer runs transformers' own code.
It reads and writes the very cache object transformers uses, through the same calls
(``get_recurrent_state`` before ``update_conv_state``, then ``update_recurrent_state`` with the
fp32 final state), so decode (model/decode_step.py), snapshots, packs and state reuse see exactly
the tensors the reference would leave. Unsupported cases (batch > 1, padding masks, several
B/C groups, no cache, one token, training, non-CPU devices) fall back to the reference forward.

The maths is the reference's (softplus + clamp of dt in the model dtype, scan in fp32, D skip,
gated RMSNorm, out_proj), arranged differently: B and C are shared by all heads (one group),
so the score block C·Bᵀ is computed once per chunk instead of once per head; the chunk's
within-chunk decay is one [heads, q, q] exp; the chunk-start state enters the output and the
chunk's contribution enters the state through two plain matmuls over all heads at once; chunks
run in order carrying the state, so nothing is padded and memory stays one chunk's worth.
The depthwise causal conv is ``F.conv1d`` over the conv state plus the new columns only.
"""

from __future__ import annotations

import contextvars
import functools
import os
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F

CHUNK = 64  # scan chunk: measured fastest on the h-350m shape (docs/benchmarks.md)
# Log-decays are clamped at this floor (a weight of exp(-40) = 4e-18 instead of anything
# smaller, far under fp32's 6e-8 resolution): left alone, they underflow to denormal floats,
# and arithmetic on denormals is tens of times slower on x86.
LOG_DECAY_FLOOR = -40.0
_ACTIVE: contextvars.ContextVar[bool] = contextvars.ContextVar("feldspar_prefill_scan", default=False)


def enabled() -> bool:
    """The fast mixer unless FELDSPAR_PREFILL=ref asks for transformers' reference."""
    return os.environ.get("FELDSPAR_PREFILL", "fast").strip().lower() != "ref"


def supports(mixer: torch.nn.Module, hidden_states: torch.Tensor, cache, attention_mask) -> bool:
    """Whether ``mixer_forward`` handles this call (else the reference forward runs)."""
    batch, seq_len, _ = hidden_states.shape
    if cache is None or batch != 1 or seq_len < 2 or mixer.training or mixer.n_groups != 1:
        return False
    if hidden_states.device.type != "cpu" or getattr(cache, "offloading", False):
        return False
    return attention_mask is None or bool(attention_mask.all())


def causal_conv(mixer: torch.nn.Module, full: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Depthwise causal conv + activation of the last ``seq_len`` columns of ``full`` [1, C, L]."""
    kernel = mixer.conv_kernel_size
    needed = seq_len + kernel - 1
    if full.shape[-1] < needed:
        full = F.pad(full, (needed - full.shape[-1], 0))
    weight = mixer.conv1d.weight
    out = F.conv1d(full[..., -needed:].to(weight.dtype), weight, mixer.conv1d.bias, groups=mixer.conv_dim)
    return mixer.act(out)


def _decay(log_decay: torch.Tensor) -> torch.Tensor:
    """exp of a log-decay (<= 0), floored at ``LOG_DECAY_FLOOR`` so it never underflows."""
    return log_decay.clamp(min=LOG_DECAY_FLOOR).exp_()


def ssd_scan(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
             state: torch.Tensor, chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The SSD recurrence over ``T`` tokens in chunks (all fp32, one B/C group).

    ``x`` [T, H, P], ``dt`` [T, H] (discretisation step, after softplus), ``A`` [H], ``B``/``C``
    [T, N], ``state`` [H, P, N] at the start. Returns ``y`` [H, T, P] (head-major, without
    the D skip) and the state after the last token.
    """
    chunk = chunk or CHUNK
    T, H, P = x.shape
    xdt = (x * dt[..., None]).transpose(0, 1).contiguous()  # [H, T, P]
    dA = (dt * A).T.contiguous()  # [H, T]
    y = torch.empty_like(xdt)
    above = torch.ones(chunk, chunk, dtype=torch.bool, device=x.device).triu_(1)
    for t0 in range(0, T, chunk):
        t1 = min(t0 + chunk, T)
        acum = dA[:, t0:t1].cumsum(1)  # [H, q]
        Bc, Cc, xc = B[t0:t1], C[t0:t1], xdt[:, t0:t1]
        log_decay = (acum[:, :, None] - acum[:, None, :]).clamp_(min=LOG_DECAY_FLOOR)  # s -> l
        scores = log_decay.masked_fill_(above[: t1 - t0, : t1 - t0], float("-inf")).exp_()
        scores.mul_(Cc @ Bc.T)  # [H, q, q]
        out = torch.matmul(Cc, state.transpose(1, 2)).mul_(_decay(acum)[..., None])  # start state
        y[:, t0:t1] = torch.baddbmm(out, scores, xc)
        total = acum[:, -1:]  # [H, 1]
        weighted = xc * _decay(total - acum)[..., None]  # [H, q, P]
        state = torch.baddbmm(state * _decay(total)[..., None], weighted.transpose(1, 2), Bc.expand(H, -1, -1))
    return y, state


def mixer_forward(mixer: torch.nn.Module, hidden_states: torch.Tensor, cache) -> torch.Tensor:
    """One prefill forward of a Mamba2 mixer over ``hidden_states`` [1, T, hidden], updating ``cache``."""
    _, seq_len, _ = hidden_states.shape
    dtype, layer = hidden_states.dtype, mixer.layer_idx
    previous = cache.get_recurrent_state(layer, state_idx=0)  # read before the conv update marks it
    gate, xbc, dt = mixer.in_proj(hidden_states).split(
        [mixer.intermediate_size, mixer.conv_dim, mixer.num_heads], dim=-1)
    full = cache.update_conv_state(xbc.transpose(1, 2), layer, conv_kernel_size=mixer.conv_kernel_size)
    xbc = causal_conv(mixer, full, seq_len).to(dtype)[0].T  # [T, conv_dim]
    size = mixer.ssm_state_size
    x, B, C = xbc.split([mixer.intermediate_size, size, size], dim=-1)
    dt = F.softplus(dt[0] + mixer.dt_bias.to(dt.dtype))
    dt = torch.clamp(dt, *mixer.time_step_limit).float()
    heads, head_dim = mixer.num_heads, mixer.head_dim
    if previous is None:
        start = torch.zeros(heads, head_dim, size, dtype=torch.float32, device=x.device)
    else:
        start = previous[0].float()
    x = x.float().view(seq_len, heads, head_dim)
    A = -torch.exp(mixer.A_log.float())
    y, final = ssd_scan(x, dt, A, B.float(), C.float(), start)
    cache.update_recurrent_state(final[None], layer_idx=layer)
    y = (x * mixer.D.float()[:, None]).add_(y.transpose(0, 1)).reshape(1, seq_len, -1)
    return mixer.out_proj(mixer.norm(y, gate).to(dtype))


class _Dispatch:
    """Mixin placed before a Mamba2 mixer's class: prefill calls inside ``active`` take ``mixer_forward``."""

    def forward(self, hidden_states, cache=None, attention_mask=None, **kwargs):
        if _ACTIVE.get() and supports(self, hidden_states, cache, attention_mask):
            return mixer_forward(self, hidden_states, cache)
        return super().forward(hidden_states, cache=cache, attention_mask=attention_mask, **kwargs)


@functools.lru_cache(maxsize=None)
def _dispatching_class(base: type) -> type:
    return type(f"FastPrefill{base.__name__}", (_Dispatch, base), {})


def install(model: torch.nn.Module) -> None:
    """Make every Mamba2 mixer of ``model`` an instance of its dispatching subclass (idempotent).

    The subclass only adds the dispatch, so weights, ``isinstance``, ``state_dict`` and
    ``copy.deepcopy`` are unchanged; outside ``active`` it runs the reference forward.
    """
    for layer in getattr(getattr(model, "model", None), "layers", []):
        mixer = getattr(layer, "mamba", None)
        if mixer is not None and not isinstance(mixer, _Dispatch):
            mixer.__class__ = _dispatching_class(type(mixer))


@contextmanager
def active(model: torch.nn.Module) -> Iterator[None]:
    """Within this block (this thread/context only), prefill forwards of ``model`` use the fast mixer."""
    if not enabled() or getattr(model.config, "model_type", None) != "granitemoehybrid":
        yield
        return
    install(model)
    token = _ACTIVE.set(True)
    try:
        yield
    finally:
        _ACTIVE.reset(token)
