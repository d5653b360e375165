"""One-token decode through every Granite 4.0 layer with little Python per layer.

Contract: ``step(model, cache, token_id, position)`` feeds one token to a transformers
``GraniteMoeHybridForCausalLM`` and returns the next-token logits (fp32, 1-D). It reads and
writes the very cache object transformers uses (``DynamicCache`` with linear-attention
layers: ``conv_states[0]`` / ``recurrent_states[0]`` updated in place, attention layers
grown through their own ``update``), so prefill by transformers and decode here interleave
freely and snapshots, packs and thread states see the same tensors. ``supports`` says when
the step applies (a Granite model whose cache already holds a prefilled state, not recording
the past); otherwise the caller uses the transformers forward.

The maths follows ``modeling_granitemoehybrid``'s single-token paths: conv-state roll plus
depthwise conv plus SiLU, dt softplus, the selective state update, D skip, gated RMSNorm,
RoPE attention over the cached keys/values (``scaled_dot_product_attention``), the routed
experts plus the shared MLP. Linear layers are called as modules, so ``nn.Linear`` and the
quantised linears of ``model.quant`` both work. Knows nothing of tokens, prompts or sampling.
"""

from __future__ import annotations

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


def mamba_step(mixer: torch.nn.Module, cached, x: torch.Tensor) -> torch.Tensor:
    """The Mamba2 single-token update of one layer; ``x`` is [1, 1, hidden]."""
    dtype = x.dtype
    gate, xbc, dt = mixer.in_proj(x)[0, 0].split(
        [mixer.intermediate_size, mixer.conv_dim, mixer.num_heads], dim=-1)
    conv_state = cached.conv_states[0]  # [1, conv_dim, kernel]
    weight = mixer.conv1d.weight[:, 0, :]
    conv_state.copy_(torch.cat([conv_state[0, :, 1:], xbc[:, None].to(conv_state.dtype)], dim=-1)[None])
    conv = (conv_state[0].to(weight.dtype) * weight).sum(-1)
    if mixer.conv1d.bias is not None:
        conv = conv + mixer.conv1d.bias
    xbc = mixer.act(conv).to(dtype)
    groups, size = mixer.n_groups, mixer.ssm_state_size
    hs, B, C = xbc.split([mixer.intermediate_size, groups * size, groups * size], dim=-1)
    heads, head_dim = mixer.num_heads, mixer.head_dim
    hs = hs.view(heads, head_dim)
    per_group = heads // groups
    B = B.view(groups, 1, size).repeat_interleave(per_group, dim=0)  # [heads, 1, size]
    C = C.view(groups, size).repeat_interleave(per_group, dim=0)  # [heads, size]
    dt = F.softplus(dt + mixer.dt_bias.to(dt.dtype))[:, None, None]  # [heads, 1, 1]
    A = -torch.exp(mixer.A_log.float())
    state = cached.recurrent_states[0]  # [1, heads, head_dim, size]
    dA = torch.exp(dt.float() * A[:, None, None])
    new_state = state[0] * dA + (dt * B) * hs[..., None]
    state.copy_(new_state[None].to(state.dtype))
    y = torch.bmm(new_state.to(C.dtype), C[..., None])[..., 0]
    y = (y + hs * mixer.D[:, None]).to(y.dtype).to(dtype)
    y = mixer.norm(y.reshape(1, 1, -1), gate.view(1, 1, -1))
    return mixer.out_proj(y.to(dtype))


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
    out = torch.zeros_like(flat)
    for slot, expert in enumerate(index[0].tolist()):
        if isinstance(experts, QuantExperts):
            gate, up = experts.gate_up[expert](flat).chunk(2, dim=-1)
            y = experts.down[expert](experts.act_fn(gate) * up)
        else:
            gate, up = F.linear(flat, experts.gate_up_proj[expert]).chunk(2, dim=-1)
            y = F.linear(experts.act_fn(gate) * up, experts.down_proj[expert])
        out = out + (y * weights[0, slot]).to(out.dtype)
    return out.view_as(x)


def layer_step(layer: torch.nn.Module, cached, h: torch.Tensor, rope) -> torch.Tensor:
    """One decoder layer (mixer + MLP, each with its scaled residual) for one token."""
    x = layer.input_layernorm(h)
    if layer.mamba is not None:
        x = mamba_step(layer.mamba, cached, x)
    else:
        x = attention_step(layer.self_attn, cached, x, rope)
    h = h + x * layer.residual_multiplier
    x = layer.post_attention_layernorm(h)
    mlp = layer.shared_mlp(x)
    if layer.has_experts:
        mlp = experts_step(layer.block_sparse_moe, x) + mlp
    return h + mlp * layer.residual_multiplier


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
    for layer, cached in zip(body.layers, cache.layers):
        h = layer_step(layer, cached, h, rope)
    logits = model.lm_head(body.norm(h)) / model.config.logits_scaling
    return logits[0, -1].float()
