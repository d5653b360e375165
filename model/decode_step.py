"""One-token decode through every Granite 4.0 layer with little Python and few ops per layer.

Contract: ``step(model, cache, token_id, position)`` feeds one token to a transformers
``GraniteMoeHybridForCausalLM`` and returns the next-token logits (fp32, 1-D). It reads and
writes the very cache object transformers uses (``DynamicCache`` with linear-attention
layers: ``conv_states[0]`` / ``recurrent_states[0]`` updated in place, attention layers
grown through their own ``update``, i.e. by concatenation), so prefill by transformers and
decode here interleave freely and snapshots, packs and thread states see the same tensors.
``supports`` says when the step applies (a Granite model whose cache already holds a
prefilled state, not recording the past); otherwise the caller uses the transformers forward.

The maths follows ``modeling_granitemoehybrid``'s single-token paths, written as a few
tensor-only kernels (plain functions of tensors, no modules inside): the Mamba2
update between its two projections (conv-state roll, depthwise conv, SiLU, dt softplus, the
selective state update done in place per group without repeating B/C, D skip, gated RMSNorm
with ``F.rms_norm``), and residual-plus-RMSNorm. Linear layers are called as modules, so
``nn.Linear`` and the quantised linears of ``model.quant`` both work. A layer runs as a few
regions (a whole Mamba layer; a Mamba mixer; an MLP tail) that ``set_compiled`` hands to
``torch.compile``: each region becomes one graph of fused kernels, shared by every layer of
the same shape, which removes most of the per-op dispatch that dominates a batch-1 step on
CPU. Attention over the growing cache and the routed experts' choice stay eager. A
compilation that fails prints one warning and the eager regions carry on. Knows nothing of
tokens, prompts or sampling.
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicLayer
from transformers.models.granitemoehybrid.modeling_granitemoehybrid import apply_rotary_pos_emb

from feldspar.model.quant import QuantExperts

GRANITE_TYPE = "granitemoehybrid"


def supports(model: torch.nn.Module, cache, position: int) -> bool:
    """Whether ``step`` can advance ``cache`` (else use the transformers forward)."""
    if position <= 0 or getattr(model.config, "model_type", None) != GRANITE_TYPE:
        return False
    if getattr(cache, "offloading", False) or len(cache.layers) != model.config.num_hidden_layers:
        return False
    for layer, cached in zip(model.model.layers, cache.layers):
        if layer.mamba is not None:
            if not cached.has_previous_state.get(0) or cached.record_past:
                return False
        elif not isinstance(cached, DynamicLayer) or not cached.is_initialized:
            return False
    return True


# ---- tensor-only kernels ------------------------------------------------------------------
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
    ``dims`` = (intermediate, conv_dim, heads, head_dim, groups, size). The state update
    and C readout run in fp32 per group (B and C broadcast, never repeated per head).
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
    # heads lead every shape (B and C expanded per head, a few KB): a compiled loop nest
    # parallelises its outer dimension, and groups is often 1
    dA, dtx = dA.view(heads, 1, 1), dtx.view(heads, head_dim, 1)
    B = B.view(groups, 1, 1, size).expand(groups, per_group, 1, size).reshape(heads, 1, size)
    C = C.float().view(groups, 1, size, 1).expand(groups, per_group, size, 1).reshape(heads, size, 1)
    state = ssm_state.view(heads, head_dim, size)
    state.mul_(dA).addcmul_(dtx, B)
    y = torch.bmm(state, C).view(heads, head_dim) + x.view(heads, head_dim) * D[:, None]
    y = y.view(1, -1) * F.silu(gate.float())
    y = F.rms_norm(y.view(groups, -1), (inter // groups,), eps=eps).view(1, 1, -1)
    return norm_w * y.to(dtype)


# ---- layers (regions: what set_compiled compiles, one graph shared by same-shaped layers) --
def mamba_mixer(layer: torch.nn.Module, conv_state: torch.Tensor, ssm_state: torch.Tensor,
                h: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A Mamba layer's mixer on its normed input ``x`` [1, 1, hidden], then the residual and
    the post-mixer norm: returns (residual, MLP input)."""
    mixer = layer.mamba
    if mixer.activation != "silu":  # pragma: no cover - every Granite 4.0 checkpoint uses silu
        raise ValueError(f"the fused decode step has no {mixer.activation!r} conv activation")
    dims = (mixer.intermediate_size, mixer.conv_dim, mixer.num_heads, mixer.head_dim, mixer.n_groups,
            mixer.ssm_state_size)
    A = -torch.exp(mixer.A_log.float())
    y = ssm_update(mixer.in_proj(x)[0, 0], conv_state, ssm_state, mixer.conv1d.weight[:, 0, :],
                   mixer.conv1d.bias, mixer.dt_bias, A, mixer.D, mixer.norm.weight,
                   mixer.norm.variance_epsilon, dims)
    post = layer.post_attention_layernorm
    return residual_norm(h, mixer.out_proj(y), layer.residual_multiplier, post.weight, post.variance_epsilon)


def mlp_tail(layer: torch.nn.Module, h: torch.Tensor, x: torch.Tensor, experts: torch.Tensor | None,
             next_w: torch.Tensor, next_eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The shared MLP on ``x`` (plus the routed experts' output, when given), the residual and
    the next norm: returns (residual, next layer's input)."""
    mlp = layer.shared_mlp(x)
    if experts is not None:
        mlp = experts + mlp
    return residual_norm(h, mlp, layer.residual_multiplier, next_w, next_eps)


def mamba_layer(layer: torch.nn.Module, conv_state: torch.Tensor, ssm_state: torch.Tensor, h: torch.Tensor,
                x: torch.Tensor, next_w: torch.Tensor, next_eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole Mamba layer without routed experts (mixer then MLP) for one token."""
    h, x = mamba_mixer(layer, conv_state, ssm_state, h, x)
    return mlp_tail(layer, h, x, None, next_w, next_eps)


EAGER = {"mamba_mixer": mamba_mixer, "mlp_tail": mlp_tail, "mamba_layer": mamba_layer}
_regions = dict(EAGER)


def set_compiled(enabled: bool, backend: str | Callable = "inductor") -> None:
    """Use ``torch.compile``d regions (compiled lazily, on first use) or the eager ones.

    Process-wide: every model's step uses the same regions. A region takes its layer module
    as an argument, so all layers of one shape and dtype share one compiled graph (their
    weights are graph inputs); another model shape compiles again."""
    _regions.clear()
    if not enabled:
        _regions.update(EAGER)
        return
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 32)
    for name, fn in EAGER.items():
        _regions[name] = _with_fallback(name, torch.compile(fn, dynamic=False, backend=backend))


def compiled() -> bool:
    return _regions["mamba_layer"] is not EAGER["mamba_layer"]


def _with_fallback(name: str, compiled_fn):
    """``compiled_fn``, or — once it has failed to compile — the eager region, after one warning."""
    def call(*args):
        try:
            return compiled_fn(*args)
        except Exception as exc:  # dynamo/inductor raise many classes (no compiler, unsupported op…)
            set_compiled(False)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            warnings.warn(f"torch.compile of the decode step failed, using the eager step: {first}",
                          RuntimeWarning, stacklevel=2)
            return EAGER[name](*args)
    return call


def attention_step(attn: torch.nn.Module, cached, x: torch.Tensor, rope) -> torch.Tensor:
    """Self-attention of one new token over the cached keys/values; ``x`` is [1, 1, hidden]."""
    head_dim = attn.head_dim
    q = attn.q_proj(x).view(1, 1, -1, head_dim).transpose(1, 2)
    k = attn.k_proj(x).view(1, 1, -1, head_dim).transpose(1, 2)
    v = attn.v_proj(x).view(1, 1, -1, head_dim).transpose(1, 2)
    if rope is not None:
        q, k = apply_rotary_pos_emb(q, k, *rope)
    keys, values = cached.update(k, v)
    out = F.scaled_dot_product_attention(q, keys, values, scale=attn.scaling,
                                         enable_gqa=attn.num_key_value_groups > 1)
    return attn.o_proj(out.transpose(1, 2).reshape(1, 1, -1))


def experts_step(moe: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The routed experts for one token: top-k router, each chosen expert once, weighted sum."""
    flat = x.view(1, -1)
    _, weights, index = moe.router(flat)
    experts = moe.experts
    out = None
    for slot, expert in enumerate(index[0].tolist()):
        if isinstance(experts, QuantExperts):
            gate, up = experts.gate_up[expert](flat).chunk(2, dim=-1)
            y = experts.down[expert](experts.act_fn(gate) * up)
        else:
            gate, up = F.linear(flat, experts.gate_up_proj[expert]).chunk(2, dim=-1)
            y = F.linear(experts.act_fn(gate) * up, experts.down_proj[expert])
        y = (y * weights[0, slot]).to(flat.dtype)
        out = y if out is None else out + y
    return out.view_as(x)


def layer_step(layer: torch.nn.Module, cached, h: torch.Tensor, x: torch.Tensor, rope,
               next_norm: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoder layer for one token: ``x`` is this layer's normed input; returns the new
    residual ``h`` and its norm by ``next_norm`` (the next layer's input norm, or the final one)."""
    next_w, next_eps = next_norm.weight, next_norm.variance_epsilon
    if layer.mamba is not None:
        states = (cached.conv_states[0], cached.recurrent_states[0])
        if not layer.has_experts:
            return _regions["mamba_layer"](layer, *states, h, x, next_w, next_eps)
        h, x = _regions["mamba_mixer"](layer, *states, h, x)
    else:
        post = layer.post_attention_layernorm
        h, x = residual_norm(h, attention_step(layer.self_attn, cached, x, rope), layer.residual_multiplier,
                             post.weight, post.variance_epsilon)
    experts = experts_step(layer.block_sparse_moe, x) if layer.has_experts else None
    return _regions["mlp_tail"](layer, h, x, experts, next_w, next_eps)


@torch.inference_mode()
def step(model: torch.nn.Module, cache, token_id: int, position: int) -> torch.Tensor:
    """Feed ``token_id`` at absolute ``position`` onto ``cache``; return next-token logits (fp32)."""
    body = model.model
    device = body.embed_tokens.weight.device
    ids = torch.tensor([[token_id]], dtype=torch.long, device=device)
    h = body.embed_tokens(ids) * body.embedding_multiplier
    rope = None
    if body.rotary_emb is not None:
        rope = body.rotary_emb(h, torch.tensor([[position]], dtype=torch.long, device=device))
    layers = body.layers
    first = layers[0].input_layernorm
    x = rms_norm(h, first.weight, first.variance_epsilon)
    for index, (layer, cached) in enumerate(zip(layers, cache.layers)):
        norm = layers[index + 1].input_layernorm if index + 1 < len(layers) else body.norm
        h, x = layer_step(layer, cached, h, x, rope, norm)
    logits = model.lm_head(x) / model.config.logits_scaling
    return logits[0, -1].float()
