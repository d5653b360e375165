"""The Granite 4.0 catalog: names, lookups, errors and the shapes from granite-models.md."""

from __future__ import annotations

import pytest

from feldspar.model.catalog import CATALOG, DEFAULT_MODEL, ModelSpec, find_spec, get_spec
from feldspar.model.errors import ModelError, ModelNotFoundError

SHORT_NAMES = ["h-350m", "350m", "h-1b", "1b", "h-micro", "micro", "h-tiny", "h-small"]


def test_catalog_has_all_sixteen_models_in_order():
    names = [spec.name for spec in CATALOG]
    expected = [f"granite-4.0-{s}{suffix}" for s in SHORT_NAMES for suffix in ("", "-base")]
    assert names == expected
    assert len(set(names)) == 16


def test_hub_ids_and_base_flags():
    for spec in CATALOG:
        assert spec.hub_id == f"ibm-granite/{spec.name}"
        assert spec.base == spec.name.endswith("-base")


def test_default_model_is_in_catalog():
    assert DEFAULT_MODEL == "granite-4.0-h-1b"
    assert get_spec(DEFAULT_MODEL).name == DEFAULT_MODEL


@pytest.mark.parametrize(
    "query",
    ["h-350m", "granite-4.0-h-350m", "ibm-granite/granite-4.0-h-350m", "H-350M", "  Granite-4.0-H-350M "],
)
def test_find_spec_accepts_short_full_and_hub_names(query):
    spec = find_spec(query)
    assert spec is not None
    assert spec.name == "granite-4.0-h-350m"
    assert spec.base is False


@pytest.mark.parametrize("query", ["h-350m-base", "granite-4.0-h-350m-base", "IBM-GRANITE/granite-4.0-h-350m-base"])
def test_find_spec_base_variants(query):
    spec = find_spec(query)
    assert spec is not None and spec.base
    assert spec.name == "granite-4.0-h-350m-base"


def test_find_spec_unknown_returns_none():
    assert find_spec("granite-3.3-8b") is None
    assert find_spec("") is None
    assert find_spec("h-350") is None


def test_get_spec_error_is_one_line_with_close_matches():
    with pytest.raises(ModelNotFoundError) as info:
        get_spec("granite-4.0-h-tinny")
    message = str(info.value)
    assert "\n" not in message
    assert "granite-4.0-h-tiny" in message
    assert isinstance(info.value, ModelError)


def test_get_spec_error_without_matches_still_names_the_query():
    with pytest.raises(ModelNotFoundError, match="zzzz-qqqq"):
        get_spec("zzzz-qqqq")


def test_spec_is_frozen():
    spec = get_spec("h-1b")
    with pytest.raises(AttributeError):
        spec.hidden_size = 1  # type: ignore[misc]


# (hidden, layers, attention indices or None for all, heads, kv, mlp, shared, experts, k,
#  mamba heads, mamba head dim, state, position, context, attention mult, residual, logits)
SHAPES = {
    "h-350m": (768, 32, (10, 13, 17, 27), 12, 4, 2048, 2048, 0, 0, 48, 32, 128, "nope", 32768, 0.015625, 0.246, 3),
    "350m": (1024, 28, None, 16, 4, 2048, 2048, 0, 0, 128, 16, 256, "rope", 32768, 0.015625, 0.263, 4),
    "h-1b": (1536, 40, (5, 15, 25, 35), 12, 4, 4096, 4096, 0, 0, 48, 64, 128, "nope", 131072, 0.0078125, 0.22, 6),
    "1b": (2048, 40, None, 16, 4, 4096, 4096, 0, 0, 128, 32, 256, "rope", 131072, 0.0078125, 0.22, 8),
    "h-micro": (2048, 40, (5, 15, 25, 35), 32, 8, 8192, 8192, 0, 0, 64, 64, 128, "nope", 131072, 0.015625, 0.22, 8),
    "micro": (2560, 40, None, 40, 8, 8192, 8192, 0, 0, 128, 40, 256, "rope", 131072, 0.015625, 0.22, 10),
    "h-tiny": (1536, 40, (5, 15, 25, 35), 12, 4, 512, 1024, 64, 6, 48, 64, 128, "nope", 131072, 0.0078125, 0.22, 6),
    "h-small": (4096, 40, (5, 15, 25, 35), 32, 8, 768, 1536, 72, 10, 128, 64, 128, "nope", 131072, 0.0078125, 0.22, 16),
}


def _shape(spec: ModelSpec) -> tuple:
    attn = None if spec.kind == "dense" else spec.attention_indices
    return (
        spec.hidden_size, spec.num_layers, attn, spec.num_heads, spec.num_kv_heads, spec.intermediate_size,
        spec.shared_intermediate_size, spec.num_experts, spec.experts_per_token, spec.mamba_n_heads,
        spec.mamba_d_head, spec.mamba_d_state, spec.position_embedding_type, spec.context,
        spec.attention_multiplier, spec.residual_multiplier, spec.logits_scaling,
    )


@pytest.mark.parametrize("short", SHORT_NAMES)
def test_shapes_match_granite_models_md(short):
    assert _shape(get_spec(short)) == SHAPES[short]
    assert _shape(get_spec(short + "-base")) == SHAPES[short]


@pytest.mark.parametrize("short", SHORT_NAMES)
def test_layer_counts_and_kinds(short):
    spec = get_spec(short)
    assert spec.attention_layers + spec.mamba_layers == spec.num_layers
    assert len(spec.layer_types) == spec.num_layers
    assert spec.layer_types.count("attention") == spec.attention_layers
    if spec.kind == "dense":
        assert spec.mamba_layers == 0 and spec.position_embedding_type == "rope" and spec.rope_theta == 1e7
    else:
        assert spec.attention_layers == 4 and spec.position_embedding_type == "nope"
    assert spec.kind == ("moe-hybrid" if spec.num_experts else "dense" if spec.mamba_layers == 0 else "hybrid")
    assert spec.mamba_n_heads * spec.mamba_d_head == 2 * spec.hidden_size
    assert spec.attention_multiplier == 1 / spec.head_dim
