"""How Feldspar names things to people, the same in every front end: the random-weights label and
the catalog's records and counts (`feldspar models --json`, the UI's Models page)."""

from __future__ import annotations

from typing import Any

from feldspar.model.catalog import DEFAULT_MODEL, ModelSpec

RANDOM_LABEL = "[RANDOM WEIGHTS: this text is noise from an untrained test model]"


def human_count(n: int) -> str:
    """340332224 -> "340.3M", 6939037248 -> "6.9B"."""
    for unit, size in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def spec_record(spec: ModelSpec) -> dict[str, Any]:
    """The JSON object for one catalog entry."""
    return {
        "name": spec.name,
        "hub_id": spec.hub_id,
        "kind": spec.kind,
        "base": spec.base,
        "params": spec.params,
        "active_params": spec.active_params,
        "context": spec.context,
        "layers": spec.num_layers,
        "attention_layers": spec.attention_layers,
        "mamba_layers": spec.mamba_layers,
        "experts": spec.num_experts,
        "experts_per_token": spec.experts_per_token,
        "hidden_size": spec.hidden_size,
        "position_embedding_type": spec.position_embedding_type,
        "card_size": spec.card_size,
        "default": spec.name == DEFAULT_MODEL,
    }
