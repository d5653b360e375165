"""One-token decode through every Granite 4.0 layer with little Python and few ops per layer.

Contract: ``step(model, cache, token_id, position)`` feeds one token to a transformers
``GraniteMoeHybridForCausalLM`` and returns the next-token logits (fp32, 1-D). It reads and
writes the very cache object transformers uses (``DynamicCache`` with linear-attention
layers: ``conv_states[0]`` / ``recurrent_states[0]`` updated in place, attention layers grown
by ``append_kv`` into spare room behind views, which a transformers forward replaces by its
usual concatenation), so prefill by transformers and decode here interleave freely and
snapshots, packs and thread states see the same tensors.
``supports`` says when the step applies (a Granite model whose cache already holds a
prefilled state, not recording the past); otherwise the caller uses the transformers forward.

The maths follows ``modeling_granitemoehybrid``'s single-token paths: the Mamba2 update
and the norms are the tensor-only kernels of ``model.step_kernels``. Linear layers are called
as modules, so ``nn.Linear`` and the quantised linears of ``model.quant`` both work. Layers run
as regions that ``set_compiled`` hands to ``torch.compile`` (a run of up to ``RUN``
consecutive Mamba layers; a single Mamba layer; a Mamba mixer and an MLP tail around routed
experts; an attention layer's projections before and its output projection, residual and MLP
after the attention; the LM head): each region becomes one graph of fused kernels, shared by
every span of the same shape, which removes most of the per-op dispatch that dominates a
batch-1 step on CPU; a float layer's one-row matmul in them is inductor's own streaming
multiply-and-sum rather than a BLAS GEMV call, and once a model's step is warm the regions
run without dynamo's per-call cache lookup (both in ``model.step_regions``). The attention over the
growing cache itself (``append_kv``, ``attend_cache``) and the routed experts' choice stay eager. A
compilation that fails prints one warning and the eager regions carry on. Knows nothing of
tokens, prompts or sampling.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicLayer
from transformers.models.granitemoehybrid.modeling_granitemoehybrid import apply_rotary_pos_emb

from feldspar.model import attend, step_regions
from feldspar.model.cpu import cpu_vendor
from feldspar.model.quant import QuantExperts
from feldspar.model.step_kernels import residual_norm, rms_norm, ssm_update

GRANITE_TYPE = "granitemoehybrid"
ROOM = 256  # tokens of spare key/value capacity an attention layer gets at least (see append_kv)


def supports(model: torch.nn.Module, cache, position: int) -> bool:
    """Whether ``step`` can advance ``cache`` (else use the transformers forward)."""
    if position <= 0 or getattr(model.config, "model_type", None) != GRANITE_TYPE:
        return False
    if getattr(cache, "offloading", False) or len(cache.layers) != model.config.num_hidden_layers:
        return False
    plan, cached = _plan(model), cache.layers
    if any(not cached[i].has_previous_state.get(0) or cached[i].record_past for i in plan.mamba):
        return False
    return all(isinstance(cached[i], DynamicLayer) and cached[i].is_initialized for i in plan.attention)


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


def mamba_run(layers: tuple, convs: tuple, ssms: tuple, h: torch.Tensor, x: torch.Tensor, next_ws: tuple,
              next_eps: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """Consecutive Mamba layers without routed experts, one after another (one graph for the run)."""
    for layer, conv, ssm, w, eps in zip(layers, convs, ssms, next_ws, next_eps):
        h, x = mamba_layer(layer, conv, ssm, h, x, w, eps)
    return h, x


def attention_in(attn: torch.nn.Module, x: torch.Tensor, rope) -> tuple[torch.Tensor, ...]:
    """The new token's query, key and value [1, heads, 1, head_dim] (rotated when ``rope``
    is given); ``x`` is the layer's normed input [1, 1, hidden]."""
    head_dim = attn.head_dim
    q = attn.q_proj(x).view(1, 1, -1, head_dim).transpose(1, 2)
    k = attn.k_proj(x).view(1, 1, -1, head_dim).transpose(1, 2)
    v = attn.v_proj(x).view(1, 1, -1, head_dim).transpose(1, 2)
    if rope is not None:
        q, k = apply_rotary_pos_emb(q, k, *rope)
    return q, k, v


def attention_out(layer: torch.nn.Module, h: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``o_proj`` of the attended heads [1, heads, 1, head_dim], the residual and the
    post-attention norm: returns (residual, MLP input)."""
    post = layer.post_attention_layernorm
    o = layer.self_attn.o_proj(out.transpose(1, 2).reshape(1, 1, -1))
    return residual_norm(h, o, layer.residual_multiplier, post.weight, post.variance_epsilon)


def attention_tail(layer: torch.nn.Module, h: torch.Tensor, out: torch.Tensor, next_w: torch.Tensor,
                   next_eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """An attention layer without routed experts after its attention: ``attention_out`` then
    the MLP tail."""
    h, x = attention_out(layer, h, out)
    return mlp_tail(layer, h, x, None, next_w, next_eps)


def head(lm_head: torch.nn.Module, x: torch.Tensor, scaling: float) -> torch.Tensor:
    """The next-token logits (fp32, 1-D) from the final normed hidden state [1, 1, hidden]."""
    return (lm_head(x) / scaling)[0, -1].float()


EAGER = {"mamba_mixer": mamba_mixer, "mlp_tail": mlp_tail, "mamba_layer": mamba_layer, "mamba_run": mamba_run,
         "attention_in": attention_in, "attention_out": attention_out, "attention_tail": attention_tail,
         "head": head}
_regions = dict(EAGER)
_warm: set[int] = set()  # signatures whose compiled regions have run with every guard checked
_signature_ids: dict[tuple, int] = {}  # each distinct signature once, as a small int (hashed per step)
_signatures: "weakref.WeakKeyDictionary[torch.nn.Module, int]" = weakref.WeakKeyDictionary()
_plans: "weakref.WeakKeyDictionary[torch.nn.Module, _Plan]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()  # the compiler's stance is process-wide: one compiled step at a time


def set_compiled(enabled: bool, backend: str | Callable = "inductor") -> None:
    """Use ``torch.compile``d regions (compiled lazily, on first use) or the eager ones.

    Process-wide: every model's step uses the same regions (``model.step_regions``). A region
    takes its layer modules as arguments, so all spans of one shape and dtype share one
    compiled graph (their weights are graph inputs); another model shape compiles again."""
    _regions.clear()
    _warm.clear()
    _plans.clear()
    _regions.update(step_regions.compile_regions(EAGER, backend, lambda: set_compiled(False)) if enabled else EAGER)


def compiled() -> bool:
    return _regions["mamba_layer"] is not EAGER["mamba_layer"]


def append_kv(cached: DynamicLayer, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Append one token's ``k``/``v`` [1, kv_heads, 1, head_dim] to an attention cache layer.

    Like ``DynamicLayer.update``, but into room kept behind the layer's tensors: ``keys`` and
    ``values`` become views of a buffer with spare capacity (a quarter more, at least
    ``ROOM`` tokens), so a step writes one token instead of copying the whole cache. The
    room is used only while the layer's tensors are the very views this function left;
    anything else (a transformers forward, a restored snapshot,
    a crop, a copy) gets a fresh buffer, so a tensor held elsewhere is never written to.
    """
    keys, values = cached.keys, cached.values
    n = keys.shape[-2]
    room = getattr(cached, "feldspar_room", None)  # (key buffer, value buffer, the views left)
    if room is not None and cached.keys is room[2] and cached.values is room[3] and room[0].shape[-2] > n:
        key_buffer, value_buffer = room[0], room[1]
    else:
        capacity = n + max(ROOM, n // 4)
        key_buffer, value_buffer = _roomy(keys, capacity), _roomy(values, capacity)
    key_buffer[:, :, n].copy_(k[:, :, 0])
    value_buffer[:, :, n].copy_(v[:, :, 0])
    cached.keys, cached.values = key_buffer[:, :, :n + 1], value_buffer[:, :, :n + 1]
    cached.feldspar_room = (key_buffer, value_buffer, cached.keys, cached.values)
    return cached.keys, cached.values


def _roomy(tensor: torch.Tensor, capacity: int) -> torch.Tensor:
    """A [batch, heads, capacity, head_dim] buffer starting with ``tensor``'s tokens."""
    batch, heads, n, head_dim = tensor.shape
    buffer = tensor.new_empty(batch, heads, capacity, head_dim)
    buffer[:, :, :n].copy_(tensor)
    return buffer


def attention_step(attn: torch.nn.Module, cached, x: torch.Tensor, rope) -> torch.Tensor:
    """Self-attention of one new token over the cached keys/values (the heads before
    ``o_proj``); ``x`` is [1, 1, hidden]."""
    q, k, v = _regions["attention_in"](attn, x, rope)
    keys, values = append_kv(cached, k, v)
    return attend_cache(q, keys, values, attn.scaling)


def attend_cache(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float) -> torch.Tensor:
    """One query token [1, heads, 1, head_dim] over the cache (grouped-query heads share a KV head).

    In fp32 Feldspar's AVX2 kernel (``model.attend``) reads each cached key and value once for
    the query heads of its group: 1.1-1.4 vs 2.1-2.3 ms a token at 1K cached tokens for the two
    batched matmuls per KV head it replaces (the query heads of a group as rows, the softmax in
    fp32), which are 3x the fused CPU attention kernel at 8K tokens and do it where the kernel is
    not ready. In bf16 the fused kernel is the faster one on an Intel Xeon; on an AMD EPYC it is
    4x slower than the matmuls (``BMM_ATTENTION_BF16``), which there run faster on an fp32 copy of
    the cache than in bf16 (bf16 batched matmuls of a length that grows every token: 2.0 vs 0.48 ms
    per layer at 1K); where the bf16 kernel is ready it does those sums on the bf16 cache itself
    (1.9-2.3x the matmuls at 1-16K cached tokens, caches out of the CPU cache)."""
    by_matmuls = q.dtype == torch.float32 or (BMM_ATTENTION_BF16 and q.dtype == torch.bfloat16 and q.is_cpu)
    if not by_matmuls:
        return F.scaled_dot_product_attention(q, keys, values, scale=scale,
                                              enable_gqa=keys.shape[1] != q.shape[1])
    if attend.fits(q, keys) and attend.ready(q.dtype):
        return attend.attend(q, keys, values, scale)
    return attend.reference(q, keys, values, scale)


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


def layer_step(layer: torch.nn.Module, cached, h: torch.Tensor, x: torch.Tensor, rope, next_w: torch.Tensor,
               next_eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoder layer for one token: ``x`` is this layer's normed input; returns the new
    residual ``h`` and its norm by ``next_w``, ``next_eps`` (the next layer's input norm, or the
    final one)."""
    if layer.mamba is not None:
        states = (cached.conv_states[0], cached.recurrent_states[0])
        if not layer.has_experts:
            return _regions["mamba_layer"](layer, *states, h, x, next_w, next_eps)
        h, x = _regions["mamba_mixer"](layer, *states, h, x)
    else:
        out = attention_step(layer.self_attn, cached, x, rope)
        if not layer.has_experts:
            return _regions["attention_tail"](layer, h, out, next_w, next_eps)
        h, x = _regions["attention_out"](layer, h, out)
    experts = experts_step(layer.block_sparse_moe, x) if layer.has_experts else None
    return _regions["mlp_tail"](layer, h, x, experts, next_w, next_eps)


def signature(model: torch.nn.Module) -> int:
    """What the compiled regions' graphs depend on: the config, the module classes and every
    parameter's and buffer's shape, strides, dtype and device, numbered (computed once per
    model). Two models of one signature run the same graphs."""
    known = _signatures.get(model)
    if known is None:
        tensors = [*model.parameters(), *model.buffers()]
        layout = tuple((tuple(t.shape), t.stride(), str(t.dtype), str(t.device)) for t in tensors)
        classes = tuple(type(m).__qualname__ for m in model.modules())
        known = _signature_ids.setdefault((model.config.to_json_string(), classes, layout), len(_signature_ids))
        _signatures[model] = known
    return known


def _canonical(cache, model: torch.nn.Module) -> None:
    """Make every Mamba state contiguous (a state from an older prefill or pack may be strided),
    so the compiled regions always see the strides they were compiled for."""
    cached = cache.layers
    for i in _plan(model).mamba:
        for states in (cached[i].conv_states, cached[i].recurrent_states):
            if not states[0].is_contiguous():
                states[0] = states[0].contiguous()


@torch.inference_mode()
def step(model: torch.nn.Module, cache, token_id: int, position: int) -> torch.Tensor:
    """Feed ``token_id`` at absolute ``position`` onto ``cache``; return next-token logits (fp32).

    Compiled, a model's first step checks every guard (and compiles what it must); once a
    step of that ``signature`` has run, later ones call the compiled entries it used directly
    (``step_regions.stepping``), or check only the guards that tell them apart
    (``skip_guard_eval_unsafe``: a step's guard checks cost more than its fused kernels).
    Inputs are canonical (contiguous states), so nothing else can differ.
    """
    if not compiled():
        return _step(model, cache, token_id, position)
    with _lock:
        _canonical(cache, model)
        key = signature(model)
        if key not in _warm:
            with step_regions.stepping(_regions.values(), key, warm=False):
                logits = _step(model, cache, token_id, position)
            if compiled():
                _warm.add(key)
            return logits
        with torch.compiler.set_stance("default", skip_guard_eval_unsafe=True), \
                step_regions.stepping(_regions.values(), key, warm=True):
            return _step(model, cache, token_id, position)


# bf16 attention by two (fp32) matmuls on AMD CPUs: 0.26 vs 0.97 ms per layer at 1K cached tokens, 2.0
# vs 7.9 at 8K (bf16 int8 h-350m decode at 8K: 68.1 -> 43.3 ms/token, fp32 copies 45.8 -> 41.3); fused elsewhere
BMM_ATTENTION_BF16 = cpu_vendor() == "AuthenticAMD"
RUN = 4  # Mamba layers per compiled run: ~10 % faster decode than 1, at ~3x the first compile


@dataclass(frozen=True)
class _Span:
    """Layers [start, stop) of one region call, with the norms that follow each of them."""
    start: int
    stop: int
    layers: tuple
    next_ws: tuple
    next_eps: tuple


@dataclass(frozen=True)
class _Plan:
    """A model's step, computed once: its spans and which layers are Mamba or attention."""
    spans: tuple[_Span, ...]
    mamba: tuple[int, ...]
    attention: tuple[int, ...]


def _plan(model: torch.nn.Module) -> _Plan:
    """The model's plan (computed once per model; ``set_compiled`` forgets every plan): runs of
    up to ``RUN`` consecutive Mamba layers without routed experts (one ``mamba_run`` call
    each), every other layer on its own, the modules looked up once rather than every token."""
    known = _plans.get(model)
    if known is None:
        layers = model.model.layers
        norms = [layer.input_layernorm for layer in layers[1:]] + [model.model.norm]
        spans = tuple(_Span(start, stop, tuple(layers[start:stop]), tuple(n.weight for n in norms[start:stop]),
                            tuple(n.variance_epsilon for n in norms[start:stop]))
                      for start, stop in _spans(layers))
        mamba = tuple(i for i, layer in enumerate(layers) if layer.mamba is not None)
        known = _plans[model] = _Plan(spans, mamba, tuple(i for i in range(len(layers)) if i not in mamba))
    return known


def _spans(layers) -> list[tuple[int, int]]:
    """[start, stop) over ``layers``: Mamba runs of up to ``RUN`` layers, every other layer alone."""
    spans: list[list[int]] = []
    open_run = False
    for index, layer in enumerate(layers):
        fusable = layer.mamba is not None and not layer.has_experts
        if fusable and open_run and index - spans[-1][0] < RUN:
            spans[-1][1] = index + 1
        else:
            spans.append([index, index + 1])
            open_run = fusable
    return [(start, stop) for start, stop in spans]


def _step(model: torch.nn.Module, cache, token_id: int, position: int) -> torch.Tensor:
    body = model.model
    device = body.embed_tokens.weight.device
    ids = torch.tensor([[token_id]], dtype=torch.long, device=device)
    h = body.embed_tokens(ids) * body.embedding_multiplier
    rope = None
    if body.rotary_emb is not None:
        rope = body.rotary_emb(h, torch.tensor([[position]], dtype=torch.long, device=device))
    first = body.layers[0].input_layernorm
    x = rms_norm(h, first.weight, first.variance_epsilon)
    cached = cache.layers
    for span in _plan(model).spans:
        if len(span.layers) > 1:
            run = range(span.start, span.stop)
            h, x = _regions["mamba_run"](
                span.layers, tuple(cached[i].conv_states[0] for i in run),
                tuple(cached[i].recurrent_states[0] for i in run), h, x, span.next_ws, span.next_eps)
        else:
            h, x = layer_step(span.layers[0], cached[span.start], h, x, rope, span.next_ws[0], span.next_eps[0])
    return _regions["head"](model.lm_head, x, model.config.logits_scaling)
