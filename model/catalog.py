"""The catalog of IBM Granite 4.0 language models: names, hub ids and exact architecture shapes.

Every Granite 4.0 language model (hybrid Mamba2/attention "h-", dense, MoE hybrid) is one
transformers architecture, ``GraniteMoeHybridForCausalLM``; a ``ModelSpec`` holds the shape
values from shared/granite-models.md so presets can build the exact config. Each ``-base``
model has the shape of its instruct twin and no chat template.

This module knows names and shapes only. It does not import torch or transformers, does not
download anything and does not know where checkpoints live; parameter counts are computed
(lazily, cached) by ``model.presets``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace

from feldspar.model.errors import ModelNotFoundError

HUB_ORG = "ibm-granite"
NAME_PREFIX = "granite-4.0-"
DEFAULT_MODEL = "granite-4.0-h-1b"

# Shared by all eight architectures (granite-models.md, "Fields shared by all eight").
VOCAB_SIZE = 100352
BOS_TOKEN_ID = 100257
EOS_TOKEN_ID = 100257
PAD_TOKEN_ID = 100256
EMBEDDING_MULTIPLIER = 12.0
RMS_NORM_EPS = 1e-5
MAMBA_N_GROUPS = 1
MAMBA_EXPAND = 2
MAMBA_D_CONV = 4
MAMBA_CHUNK_SIZE = 256


@dataclass(frozen=True)
class ModelSpec:
    """One Granite 4.0 language model at its real shape (instruct or base)."""

    short: str  # "h-350m"
    kind: str  # "hybrid" | "dense" | "moe-hybrid"
    hidden_size: int
    num_layers: int
    attention_indices: tuple[int, ...]  # 0-based; every other layer is mamba
    num_heads: int
    num_kv_heads: int
    intermediate_size: int  # per-expert size for MoE models, else the MLP size
    shared_intermediate_size: int
    num_experts: int
    experts_per_token: int
    mamba_n_heads: int
    mamba_d_head: int
    mamba_d_state: int
    position_embedding_type: str  # "nope" | "rope"
    rope_theta: float
    context: int  # max_position_embeddings
    attention_multiplier: float
    residual_multiplier: float
    logits_scaling: float
    card_size: str  # what the model card says, e.g. "340M", "7B / 1B active"
    base: bool = False

    @property
    def name(self) -> str:
        return f"{NAME_PREFIX}{self.short}{'-base' if self.base else ''}"

    @property
    def hub_id(self) -> str:
        return f"{HUB_ORG}/{self.name}"

    @property
    def instruct(self) -> bool:
        return not self.base

    @property
    def layer_types(self) -> tuple[str, ...]:
        """"mamba"/"attention" per layer, as in the published config.json files."""
        attn = set(self.attention_indices)
        return tuple("attention" if i in attn else "mamba" for i in range(self.num_layers))

    @property
    def attention_layers(self) -> int:
        return len(self.attention_indices)

    @property
    def mamba_layers(self) -> int:
        return self.num_layers - len(self.attention_indices)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def params(self) -> int:
        """Total parameters, tied embeddings counted once."""
        parts = param_breakdown(self)
        return parts["dense"] + parts["experts"]

    @property
    def active_params(self) -> int:
        """Parameters used per token: non-expert + k/E of the routed experts."""
        parts = param_breakdown(self)
        routed = parts["experts"] * self.experts_per_token // self.num_experts if self.num_experts else 0
        return parts["dense"] + routed


def _mamba_layer_params(spec: ModelSpec) -> int:
    inner = MAMBA_EXPAND * spec.hidden_size
    conv_dim = inner + 2 * MAMBA_N_GROUPS * spec.mamba_d_state
    conv = conv_dim * MAMBA_D_CONV + conv_dim  # depthwise weight + bias
    in_proj = spec.hidden_size * (inner + conv_dim + spec.mamba_n_heads)
    per_head = 3 * spec.mamba_n_heads  # dt_bias, A_log, D
    return conv + in_proj + per_head + inner + inner * spec.hidden_size  # + gated norm + out_proj


def _attention_layer_params(spec: ModelSpec) -> int:
    q_and_o = 2 * spec.hidden_size * spec.num_heads * spec.head_dim
    k_and_v = 2 * spec.hidden_size * spec.num_kv_heads * spec.head_dim
    return q_and_o + k_and_v


def param_breakdown(spec: ModelSpec, vocab_size: int = VOCAB_SIZE) -> dict[str, int]:
    """Analytic parameter counts by part: dense (always active) and routed experts."""
    per_layer = 2 * spec.hidden_size + 3 * spec.hidden_size * spec.shared_intermediate_size
    per_layer += spec.num_experts * spec.hidden_size  # router
    mixers = spec.attention_layers * _attention_layer_params(spec)
    mixers += spec.mamba_layers * _mamba_layer_params(spec)
    experts = spec.num_layers * spec.num_experts * 3 * spec.hidden_size * spec.intermediate_size
    dense = vocab_size * spec.hidden_size + spec.hidden_size + spec.num_layers * per_layer + mixers
    return {"dense": dense, "experts": experts}


def _hybrid(short: str, hidden: int, heads: int, kv: int, mlp: int, mamba_heads: int, **kw) -> ModelSpec:
    fields = dict(
        short=short, kind="hybrid", hidden_size=hidden, num_layers=40, attention_indices=(5, 15, 25, 35),
        num_heads=heads, num_kv_heads=kv, intermediate_size=mlp, shared_intermediate_size=mlp,
        num_experts=0, experts_per_token=0, mamba_n_heads=mamba_heads,
        mamba_d_head=MAMBA_EXPAND * hidden // mamba_heads, mamba_d_state=128,
        position_embedding_type="nope", rope_theta=1e4, context=131072,
        attention_multiplier=1.0 / (hidden // heads), residual_multiplier=0.22,
    )
    fields.update(kw)
    return ModelSpec(**fields)


def _dense(short: str, hidden: int, layers: int, heads: int, kv: int, mlp: int, mamba_d_head: int, **kw) -> ModelSpec:
    fields = dict(
        short=short, kind="dense", hidden_size=hidden, num_layers=layers,
        attention_indices=tuple(range(layers)), num_heads=heads, num_kv_heads=kv, intermediate_size=mlp,
        shared_intermediate_size=mlp, num_experts=0, experts_per_token=0, mamba_n_heads=128,
        mamba_d_head=mamba_d_head, mamba_d_state=256, position_embedding_type="rope", rope_theta=1e7,
        context=131072, attention_multiplier=1.0 / (hidden // heads), residual_multiplier=0.22,
    )
    fields.update(kw)
    return ModelSpec(**fields)


_INSTRUCT: tuple[ModelSpec, ...] = (
    _hybrid("h-350m", 768, 12, 4, 2048, 48, num_layers=32, attention_indices=(10, 13, 17, 27),
            mamba_d_head=32, context=32768, residual_multiplier=0.246, logits_scaling=3.0, card_size="340M"),
    _dense("350m", 1024, 28, 16, 4, 2048, 16, context=32768, residual_multiplier=0.263,
           logits_scaling=4.0, card_size="350M"),
    _hybrid("h-1b", 1536, 12, 4, 4096, 48, logits_scaling=6.0, card_size="1.5B"),
    _dense("1b", 2048, 40, 16, 4, 4096, 32, logits_scaling=8.0, card_size="1.6B"),
    _hybrid("h-micro", 2048, 32, 8, 8192, 64, logits_scaling=8.0, card_size="3B"),
    _dense("micro", 2560, 40, 40, 8, 8192, 40, logits_scaling=10.0, card_size="3B"),
    _hybrid("h-tiny", 1536, 12, 4, 512, 48, kind="moe-hybrid", shared_intermediate_size=1024,
            num_experts=64, experts_per_token=6, logits_scaling=6.0, card_size="7B / 1B active"),
    _hybrid("h-small", 4096, 32, 8, 768, 128, kind="moe-hybrid", shared_intermediate_size=1536,
            num_experts=72, experts_per_token=10, logits_scaling=16.0, card_size="32B / 9B active"),
)

CATALOG: list[ModelSpec] = [s for spec in _INSTRUCT for s in (spec, replace(spec, base=True))]


def _aliases(spec: ModelSpec) -> tuple[str, ...]:
    suffix = "-base" if spec.base else ""
    return (spec.name, spec.hub_id, spec.short + suffix, f"granite-4-{spec.short}{suffix}")


_BY_ALIAS: dict[str, ModelSpec] = {alias.lower(): spec for spec in CATALOG for alias in _aliases(spec)}


def find_spec(name: str) -> ModelSpec | None:
    """The spec for a catalog name, short name or hub id (case-insensitive), else None."""
    if not isinstance(name, str):
        return None
    return _BY_ALIAS.get(name.strip().lower())


def close_matches(name: str, n: int = 3) -> list[str]:
    """Catalog names that look like ``name`` (best first)."""
    key = name.strip().lower()
    hits = difflib.get_close_matches(key, list(_BY_ALIAS), n=n * 4, cutoff=0.5)
    names: list[str] = []
    for hit in hits:
        full = _BY_ALIAS[hit].name
        if full not in names:
            names.append(full)
    return names[:n]


def get_spec(name: str) -> ModelSpec:
    """Like find_spec but raises ModelNotFoundError (one line, with close matches)."""
    spec = find_spec(name)
    if spec is not None:
        return spec
    matches = close_matches(str(name))
    hint = f": did you mean {', '.join(matches)}?" if matches else ""
    raise ModelNotFoundError(f"unknown Granite 4.0 model {name!r}{hint}", fix="catalog")
