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
so the score block C·Bᵀ is computed once per chunk instead of once per head; the chunk-start
states enter the output and each chunk's contribution enters the state through plain batched
matmuls over all heads at once; the whole chunks run as one batch and the remainder as one
shorter chunk, so nothing is padded and the op count per layer does not grow with the length
(on a busy machine each op waits for its threads to be scheduled, so few large ops win).
The depthwise causal conv is ``F.conv1d`` over the conv state plus the new columns only.
``set_compiled`` runs the chunk scan ``torch.compile``d (shapes dynamic: one set of graphs for
every prompt length; ``Engine.load`` turns it on where the ``compile`` setting is ``on``).
"""

from __future__ import annotations

import contextvars
import functools
import os
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F

from feldspar.model.step_regions import with_fallback

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


def _full_chunks(xdt: torch.Tensor, dA: torch.Tensor, B: torch.Tensor, C: torch.Tensor, state: torch.Tensor,
                 chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The SSD scan over ``T`` = a whole number of chunks, all chunks at once.

    ``xdt`` [T, H, P] (x times dt), ``dA`` [T, H] (dt times A), ``B``/``C`` [T, N], ``state``
    [N, H*P]. Returns ``y`` [T, H, P] and the final state [N, H*P].
    """
    T, H, P = xdt.shape
    nc, N = T // chunk, B.shape[-1]
    x = xdt.view(nc, chunk, H, P)
    Bv, Cv = B.reshape(nc, chunk, N), C.reshape(nc, chunk, N)
    acum = dA.view(nc, chunk, H).transpose(1, 2).cumsum(-1)  # [nc, H, q]: log decay from chunk start
    above = torch.ones(chunk, chunk, dtype=torch.bool, device=x.device).triu_(1)
    log_decay = (acum[..., :, None] - acum[..., None, :]).clamp_(min=LOG_DECAY_FLOOR)  # s -> l
    scores = log_decay.masked_fill_(above, float("-inf")).exp_().mul_(torch.bmm(Cv, Bv.transpose(1, 2))[:, None])
    inner = torch.matmul(scores, x.transpose(1, 2))  # [nc, H, q, P]
    total = acum[..., -1]  # [nc, H]
    weighted = x * _decay(total[..., None] - acum).transpose(1, 2)[..., None]  # [nc, q, H, P]
    added = torch.bmm(Bv.transpose(1, 2), weighted.view(nc, chunk, H * P))  # [nc, N, H*P]
    # Chunk-start states: start[c] = sum over z <= c of exp(total[z..c-1]) * (state, added...)[z].
    ends = F.pad(total.cumsum(0), (0, 0, 1, 0))  # [nc+1, H]
    between = (ends[:, None, :] - ends[None, :, :]).clamp_(min=LOG_DECAY_FLOOR)  # [c, z, H]
    lower = torch.ones(nc + 1, nc + 1, dtype=torch.bool, device=x.device).tril_()
    between = between.masked_fill_(~lower[..., None], float("-inf")).exp_()
    states = torch.cat([state[None], added]).view(nc + 1, N, H, P)
    starts = torch.einsum("czh,znhp->cnhp", between, states)  # [nc+1, N, H, P]
    outer = torch.bmm(Cv, starts[:nc].reshape(nc, N, H * P)).view(nc, chunk, H, P)
    outer.mul_(_decay(acum).transpose(1, 2)[..., None]).add_(inner.transpose(1, 2))
    return outer.view(T, H, P), starts[nc].reshape(N, H * P)


_chunks = _full_chunks  # what ssd_scan runs for its chunks: this, or it compiled (set_compiled)


def set_compiled(enabled: bool, backend="inductor") -> None:
    """Run the chunk scan ``torch.compile``d (process-wide) or eager. Its pointwise passes over
    the score blocks fuse: 1.10-1.17x an fp32 h-350m prefill at 3-4K tokens (docs/benchmarks.md);
    the first prefill after this compiles (~20 s, a few with inductor's on-disk cache). A
    compilation that fails warns once and the eager scan carries on."""
    global _chunks
    _chunks = _full_chunks if not enabled else with_fallback(
        torch.compile(_full_chunks, dynamic=True, backend=backend), _full_chunks, lambda: set_compiled(False),
        "the prefill scan", "the eager scan")


def compiled() -> bool:
    return _chunks is not _full_chunks


def ssd_scan(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
             state: torch.Tensor, chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The SSD recurrence over ``T`` tokens in chunks (all fp32, one B/C group).

    ``x`` [T, H, P], ``dt`` [T, H] (discretisation step, after softplus), ``A`` [H], ``B``/``C``
    [T, N], ``state`` [H, P, N] at the start. Returns ``y`` [T, H, P] (without the D skip)
    and the state [H, P, N] (contiguous) after the last token. The whole chunks run as one batch, the
    remainder (if any) as one shorter chunk after them: nothing is padded.
    """
    chunk = chunk or CHUNK
    T, H, P = x.shape
    N = B.shape[-1]
    xdt, dA = x * dt[..., None], dt * A
    flat = state.permute(2, 0, 1).reshape(N, H * P)
    whole = T - T % chunk
    parts = [(0, whole, chunk)] if whole else []
    if whole < T:
        parts.append((whole, T, T - whole))
    ys = []
    for t0, t1, q in parts:
        y, flat = _chunks(xdt[t0:t1], dA[t0:t1], B[t0:t1], C[t0:t1], flat, q)
        ys.append(y)
    y = ys[0] if len(ys) == 1 else torch.cat(ys)
    return y, flat.view(N, H, P).permute(1, 2, 0).contiguous()


def mixer_forward(mixer: torch.nn.Module, hidden_states: torch.Tensor, cache) -> torch.Tensor:
    """One prefill forward of a Mamba2 mixer over ``hidden_states`` [1, T, hidden], updating ``cache``."""
    _, seq_len, _ = hidden_states.shape
    dtype, layer = hidden_states.dtype, mixer.layer_idx
    previous = cache.get_recurrent_state(layer, state_idx=0)  # read before the conv update marks it
    gate, xbc, dt = mixer.in_proj(hidden_states).split(
        [mixer.intermediate_size, mixer.conv_dim, mixer.num_heads], dim=-1)
    full = cache.update_conv_state(xbc.transpose(1, 2), layer, conv_kernel_size=mixer.conv_kernel_size)
    # [T, conv_dim] token-major: one blocked transpose, so the scan's and the D skip's reads run along
    # rows (strided, they made the D skip alone 3.4 % of an fp32 4K prefill; 1.05x the prefill)
    xbc = causal_conv(mixer, full, seq_len).to(dtype)[0].T.contiguous()
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
    y = y.add_(x * mixer.D.float()[:, None]).view(1, seq_len, -1)
    return mixer.out_proj(mixer.norm(y, gate).to(dtype).contiguous())


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
