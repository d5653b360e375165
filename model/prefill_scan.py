"""A faster Mamba2 mixer forward for prefill: the chunked SSD scan as matmuls over all heads.

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
so the score block C·Bᵀ is computed once per chunk instead of once per head; everything that
needs no state is computed for all whole chunks at once, then the state is carried through the
chunks in order with two matmuls over all heads per chunk (model/ssd_chunks.py); the remainder
runs as one shorter chunk, so nothing is padded.
The depthwise causal conv runs token-major, on in_proj's rows as they come (no transposes),
after the conv state's last ``kernel - 1`` columns; the cache keeps the new tokens' last columns.
``set_compiled`` runs the scan's stateless parts, the conv and the D skip + gated RMSNorm ``torch.compile``d
(shapes dynamic: one set of graphs for every prompt length; ``Engine.load`` turns it on where
the ``compile`` setting is ``on``).
"""

from __future__ import annotations

import contextvars
import functools
import os
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F

from feldspar.model import ssd_chunks
from feldspar.model.step_kernels import skip_gated_norm
from feldspar.model.step_regions import with_fallback

CHUNK = 64  # scan chunk: measured fastest on the h-350m shape (docs/benchmarks.md)
_ACTIVE: contextvars.ContextVar[bool] = contextvars.ContextVar("feldspar_prefill_scan", default=False)


def enabled() -> bool:
    """The fast mixer unless FELDSPAR_PREFILL=ref asks for transformers' reference."""
    return os.environ.get("FELDSPAR_PREFILL", "fast").strip().lower() != "ref"


def supports(mixer: torch.nn.Module, hidden_states: torch.Tensor, cache, attention_mask) -> bool:
    """Whether ``mixer_forward`` handles this call (else the reference forward runs)."""
    batch, seq_len, _ = hidden_states.shape
    if cache is None or batch != 1 or seq_len < 2 or mixer.training or mixer.n_groups != 1:
        return False
    if getattr(mixer, "activation", None) != "silu" or not hasattr(mixer.norm, "group_size"):
        return False
    if hidden_states.device.type != "cpu" or getattr(cache, "offloading", False):
        return False
    return attention_mask is None or bool(attention_mask.all())


def conv_prefix(mixer: torch.nn.Module, conv_state: torch.Tensor | None) -> torch.Tensor:
    """The ``kernel - 1`` columns before the new tokens, token-major [kernel-1, C] (zeros at the start).
    A copy: the cache's conv state is overwritten in place by the update that follows."""
    kernel, channels = mixer.conv_kernel_size, mixer.conv_dim
    if conv_state is None:
        return mixer.conv1d.weight.new_zeros(kernel - 1, channels)
    return conv_state[0, :, conv_state.shape[-1] - (kernel - 1):].T.to(mixer.conv1d.weight.dtype).contiguous()


def remember_conv(mixer: torch.nn.Module, cache, xbc: torch.Tensor) -> None:
    """``cache.update_conv_state`` with the new columns [1, T, C]: only the last ``kernel`` of them
    (all it keeps) unless the cache records the whole past."""
    kernel = mixer.conv_kernel_size
    layer = cache.layers[mixer.layer_idx]
    tail = xbc if getattr(layer, "record_past", False) else xbc[:, -kernel:]
    cache.update_conv_state(tail.transpose(1, 2), mixer.layer_idx, conv_kernel_size=kernel)


def causal_conv(xbc: torch.Tensor, prefix: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor | None) -> torch.Tensor:
    """Depthwise causal conv + SiLU, token-major: ``xbc`` [T, C] after ``prefix`` [K-1, C], ``weight``
    [K, C] -> [T, C] contiguous in ``weight``'s dtype, summed in fp32 (as oneDNN's bf16 conv does).
    One pass over the columns when compiled; no transposes either way."""
    length, kernel, dtype = xbc.shape[0], weight.shape[0], weight.dtype
    padded, weight = torch.cat([prefix, xbc.to(dtype)]).float(), weight.float()
    out = padded[kernel - 1:] * weight[kernel - 1]
    for k in range(kernel - 1):
        out.addcmul_(padded[k:k + length], weight[k])
    if bias is not None:
        out.add_(bias.float())
    return F.silu(out.to(dtype))


def skip_gate_norm(y: torch.Tensor, x: torch.Tensor, D: torch.Tensor, gate: torch.Tensor, weight: torch.Tensor,
                   eps: float, groups: int, dtype: torch.dtype) -> torch.Tensor:
    """``skip_gated_norm`` times the norm's ``weight`` in fp32, then in ``dtype`` (as transformers'
    prefill norms its fp32 ``y``): [T, H*P]."""
    return (weight * skip_gated_norm(y, x, D, gate, groups, eps)).to(dtype)


EAGER = {"parts": ssd_chunks.chunk_parts, "conv": causal_conv, "norm": skip_gate_norm}
_run = dict(EAGER)  # what mixer_forward runs: these, or them compiled (set_compiled)


def set_compiled(enabled: bool, backend="inductor") -> None:
    """Run the scan's stateless parts, the conv and the skip + gated norm ``torch.compile``d (process-wide) or
    eager. Their pointwise passes fuse: 1.10-1.17x an fp32 h-350m prefill at 3-4K tokens
    (docs/benchmarks.md); the first prefill after this compiles (~20 s, a few with inductor's
    on-disk cache). A compilation that fails warns once and the eager code carries on."""
    global _run
    _run = {name: with_fallback(torch.compile(fn, dynamic=True, backend=backend), fn,
                                lambda: set_compiled(False), "the prefill scan", "the eager scan")
            for name, fn in EAGER.items()} if enabled else dict(EAGER)


def compiled() -> bool:
    return _run["parts"] is not EAGER["parts"]


def ssd_scan(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
             state: torch.Tensor, chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The SSD recurrence over ``T`` tokens in chunks (all fp32, one B/C group).

    ``x`` [T, H, P], ``dt`` [T, H] (discretisation step, after softplus), ``A`` [H], ``B``/``C``
    [T, N], ``state`` [H, P, N] at the start. Returns ``y`` [T, H, P] (without the D skip)
    and the state [H, P, N] (contiguous) after the last token. The whole chunks run first
    (model/ssd_chunks.py), the remainder (if any) as one shorter chunk after them: nothing is padded.
    """
    chunk = chunk or CHUNK
    T, H, P = x.shape
    N = B.shape[-1]
    flat = state.permute(2, 0, 1).reshape(N, H * P)
    whole = T - T % chunk
    parts = [(0, whole, chunk)] if whole else []
    if whole < T:
        parts.append((whole, T, T - whole))
    ys = []
    for t0, t1, q in parts:
        y, flat = ssd_chunks.scan_chunks(x[t0:t1], dt[t0:t1], A, B[t0:t1], C[t0:t1], flat, q, _run["parts"])
        ys.append(y)
    y = ys[0] if len(ys) == 1 else torch.cat(ys)
    return y, flat.view(N, H, P).permute(1, 2, 0).contiguous()


def mixer_forward(mixer: torch.nn.Module, hidden_states: torch.Tensor, cache) -> torch.Tensor:
    """One prefill forward of a Mamba2 mixer over ``hidden_states`` [1, T, hidden], updating ``cache``."""
    _, seq_len, _ = hidden_states.shape
    dtype, layer = hidden_states.dtype, mixer.layer_idx
    previous = cache.get_recurrent_state(layer, state_idx=0)  # read before the conv update marks it
    prefix = conv_prefix(mixer, cache.get_conv_state(layer, state_idx=0))
    gate, xbc, dt = mixer.in_proj(hidden_states).split(
        [mixer.intermediate_size, mixer.conv_dim, mixer.num_heads], dim=-1)
    remember_conv(mixer, cache, xbc)
    # token-major [T, conv_dim] straight from in_proj's rows: the scan's and the D skip's reads run
    # along rows (strided, they made the D skip alone 3.4 % of an fp32 4K prefill)
    weight = mixer.conv1d.weight[:, 0].T.contiguous()  # [K, C]: rows along the channels
    xbc = _run["conv"](xbc[0], prefix, weight, mixer.conv1d.bias).to(dtype)
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
    norm, groups = mixer.norm, mixer.intermediate_size // mixer.norm.group_size
    y = _run["norm"](y, x, mixer.D.float(), gate[0], norm.weight, norm.variance_epsilon, groups, dtype)
    return mixer.out_proj(y[None])


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
