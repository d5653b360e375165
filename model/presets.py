"""Granite 4.0 configs at real or miniature shape, random models, and exact parameter counts.

``granite_config`` turns a catalog ``ModelSpec`` into a ``GraniteMoeHybridConfig`` with every
field of shared/granite-models.md; ``tiny=True`` keeps the layer kinds (Mamba2 + attention for
hybrids, routed experts + shared MLP for MoE, all-attention RoPE for dense) at a width of 64
and a vocabulary that matches the tiny tokenizer of ``model.tokenizer_build``.
``count_params`` is analytic (no torch) so the catalog prints fast; tests cross-check it
against meta-device models. ``build_random_model`` draws weight matrices with std
1/sqrt(fan_in) so that a random model's logits depend on context (see ``_spread_init``).

The miniature is made *sensitive* so that tests of state reuse can fail: its Mamba state
decays over thousands of tokens instead of a few, its convolution and SSM paths and its
attention each move the logits comparably, attention is sharp, and logits are scaled up
(x32) so a state error shows far above the comparison tolerance. It stays the real
architecture: only weight values and the config's multipliers differ. The measured
sensitivity is asserted by tests/model/test_sensitivity.py.

It does not know trained weights, files, or the network: random models are random.
torch and transformers are imported lazily so that listing the catalog stays cheap.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from feldspar.model import catalog
from feldspar.model.catalog import ModelSpec, get_spec
from feldspar.model.tokenizer_build import ADDED_TOKENS, TINY_REGULAR_SIZE

if TYPE_CHECKING:
    import torch
    from transformers import GraniteMoeHybridConfig, GraniteMoeHybridForCausalLM

TINY_HIDDEN = 64
TINY_LAYERS = 4
TINY_ATTENTION_INDICES = (1,)
TINY_HEADS, TINY_KV_HEADS = 4, 2
TINY_MAMBA_HEADS = 4  # × head dim 32 = expand 2 × hidden 64
TINY_MAMBA_D_STATE = 16
TINY_MAMBA_CHUNK = 64
TINY_EXPERTS, TINY_EXPERTS_ACTIVE = 4, 2
TINY_CONTEXT = 131072
TINY_PAD_ID = TINY_REGULAR_SIZE  # first added token is <|pad|>
TINY_EOS_ID = TINY_REGULAR_SIZE + 1  # then <|end_of_text|>
TINY_VOCAB_SIZE = -(-(TINY_REGULAR_SIZE + len(ADDED_TOKENS)) // 64) * 64
# Sensitive miniature (see the module docstring); powers of two keep the scaling exact.
TINY_LOGITS_SCALING = 1 / 32  # logits = lm_head(h) * 32: up to ~20, not ~0.01
TINY_ATTENTION_MULTIPLIER = 1.0  # sharp attention: each cached key and value counts
TINY_MAMBA_A_LOG = -5.0  # A = -exp(-5): with small steps the SSM state lasts thousands of tokens
TINY_MAMBA_DT_BIAS = -3.0  # steps softplus(x - 3), about 0.05 (the stock init decays in ~3 tokens)


def _spec(name_or_spec: str | ModelSpec) -> ModelSpec:
    return name_or_spec if isinstance(name_or_spec, ModelSpec) else get_spec(name_or_spec)


def tiny_spec(name_or_spec: str | ModelSpec) -> ModelSpec:
    """The miniature of a spec: same kind and residual/embedding multipliers, small width,
    depth and experts; attention and logit scaling of the sensitive miniature."""
    spec = _spec(name_or_spec)
    dense = spec.kind == "dense"
    moe = spec.num_experts > 0
    return replace(
        spec,
        hidden_size=TINY_HIDDEN,
        num_layers=TINY_LAYERS,
        attention_indices=tuple(range(TINY_LAYERS)) if dense else TINY_ATTENTION_INDICES,
        num_heads=TINY_HEADS,
        num_kv_heads=TINY_KV_HEADS,
        intermediate_size=32 if moe else 128,
        shared_intermediate_size=64 if moe else 128,
        num_experts=TINY_EXPERTS if moe else 0,
        experts_per_token=TINY_EXPERTS_ACTIVE if moe else 0,
        mamba_n_heads=TINY_MAMBA_HEADS,
        mamba_d_head=catalog.MAMBA_EXPAND * TINY_HIDDEN // TINY_MAMBA_HEADS,
        mamba_d_state=TINY_MAMBA_D_STATE,
        context=TINY_CONTEXT,
        attention_multiplier=TINY_ATTENTION_MULTIPLIER,
        logits_scaling=TINY_LOGITS_SCALING,
    )


def config_dict(spec: ModelSpec, tiny: bool = False) -> dict[str, Any]:
    """Keyword arguments for GraniteMoeHybridConfig (layer types as in published config.json)."""
    if tiny:
        spec = tiny_spec(spec)
    vocab = TINY_VOCAB_SIZE if tiny else catalog.VOCAB_SIZE
    pad, eos = (TINY_PAD_ID, TINY_EOS_ID) if tiny else (catalog.PAD_TOKEN_ID, catalog.EOS_TOKEN_ID)
    return dict(
        vocab_size=vocab, hidden_size=spec.hidden_size, num_hidden_layers=spec.num_layers,
        layer_types=list(spec.layer_types), num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads, intermediate_size=spec.intermediate_size,
        shared_intermediate_size=spec.shared_intermediate_size, num_local_experts=spec.num_experts,
        num_experts_per_tok=spec.experts_per_token, hidden_act="silu",
        max_position_embeddings=spec.context, rms_norm_eps=catalog.RMS_NORM_EPS,
        tie_word_embeddings=True, embedding_multiplier=catalog.EMBEDDING_MULTIPLIER,
        attention_multiplier=spec.attention_multiplier, residual_multiplier=spec.residual_multiplier,
        logits_scaling=spec.logits_scaling, attention_bias=False, attention_dropout=0.0,
        position_embedding_type=spec.position_embedding_type,
        rope_parameters={"rope_type": "default", "rope_theta": spec.rope_theta},
        mamba_n_heads=spec.mamba_n_heads, mamba_d_head=spec.mamba_d_head,
        mamba_d_state=spec.mamba_d_state, mamba_n_groups=catalog.MAMBA_N_GROUPS,
        mamba_expand=catalog.MAMBA_EXPAND, mamba_d_conv=catalog.MAMBA_D_CONV,
        mamba_chunk_size=TINY_MAMBA_CHUNK if tiny else catalog.MAMBA_CHUNK_SIZE,
        mamba_conv_bias=True, mamba_proj_bias=False,
        bos_token_id=eos, eos_token_id=eos, pad_token_id=pad, use_cache=True,
    )


def granite_config(name_or_spec: str | ModelSpec, tiny: bool = False) -> GraniteMoeHybridConfig:
    """The GraniteMoeHybridConfig of a catalog model (exact shape, or its miniature)."""
    from transformers import GraniteMoeHybridConfig

    spec = _spec(name_or_spec)
    config = GraniteMoeHybridConfig(**config_dict(spec, tiny=tiny))
    config.architectures = ["GraniteMoeHybridForCausalLM"]
    return config


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """torch dtype from a dtype or a name such as "float32", "bf16", "bfloat16"."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    key = str(dtype).lower().removeprefix("torch.")
    if key not in names:
        raise ValueError(f"unsupported dtype {dtype!r}: use float32, bfloat16 or float16")
    return names[key]


def build_random_model(
    name: str | ModelSpec,
    tiny: bool = False,
    device: str = "cpu",
    dtype: torch.dtype | str = "float32",
    seed: int = 0,
) -> GraniteMoeHybridForCausalLM:
    """A randomly initialised model; on "meta" only shapes exist, on cpu weights depend on seed only."""
    import torch
    from transformers import GraniteMoeHybridForCausalLM

    config = granite_config(name, tiny=tiny)
    torch_dtype = resolve_dtype(dtype)
    if device == "meta":
        with torch.device("meta"):
            return GraniteMoeHybridForCausalLM(config).to(torch_dtype)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with torch.device(device):
            model = GraniteMoeHybridForCausalLM(config)
        _spread_init(model)
        if tiny:
            _sensitize_mamba(model)
    return model.to(torch_dtype).eval()


def _spread_init(model: torch.nn.Module) -> None:
    """Re-draw every weight matrix with std 1/sqrt(fan_in) (embeddings keep std 0.02).

    With the stock 0.02 init the residual stream is almost only the token embedding, so
    logits barely depend on context and cache bugs go unnoticed; this makes every layer count.
    """
    spread_parameters(model.named_parameters())


def spread_parameters(named_parameters) -> None:
    """``_spread_init`` over (full name, parameter) pairs (also one layer at a time: model/layerwise.py)."""
    import torch

    with torch.no_grad():
        for name, param in named_parameters:
            if param.dim() >= 2 and "embed_tokens" not in name and "conv1d" not in name:
                param.normal_(0.0, param.shape[-1] ** -0.5)


def _sensitize_mamba(model: torch.nn.Module) -> None:
    """Slow the Mamba decay and give the depthwise convolution std 1/sqrt(kernel).

    With the stock init (A = -1..-heads, dt about 1.3, conv weights std 0.02) the SSM state is
    forgotten within a few tokens and the convolution output is ~1 % of its input, so a lost
    or corrupted SSM or conv state barely changes the logits.
    """
    for layer in model.model.layers:
        if getattr(layer, "mamba", None) is not None:
            sensitize_mixer(layer.mamba)


def sensitize_mixer(mixer: torch.nn.Module) -> None:
    """``_sensitize_mamba`` for one Mamba2 mixer."""
    import torch

    with torch.no_grad():
        mixer.A_log.fill_(TINY_MAMBA_A_LOG)
        mixer.dt_bias.fill_(TINY_MAMBA_DT_BIAS)
        mixer.conv1d.weight.normal_(0.0, mixer.conv1d.weight.shape[-1] ** -0.5)


@lru_cache(maxsize=None)
def _count(spec: ModelSpec, tiny: bool) -> tuple[int, int]:
    shape = tiny_spec(spec) if tiny else spec
    parts = catalog.param_breakdown(shape, TINY_VOCAB_SIZE if tiny else catalog.VOCAB_SIZE)
    active = parts["dense"]
    if shape.num_experts:
        active += parts["experts"] * shape.experts_per_token // shape.num_experts
    return parts["dense"] + parts["experts"], active


def count_params(name: str | ModelSpec, tiny: bool = False) -> tuple[int, int]:
    """(total, active) parameters; tied embeddings once, active = dense + k/E of experts."""
    return _count(_spec(name), tiny)
