"""Facts for the UI's Models page: the catalog, the loaded engine, its state cache.

Plain dicts only, so the page's view functions can be tested without a model. Knows the
catalog, the engine's public facts and the prefix cache's ``stats()``; nothing of Streamlit.
"""

from __future__ import annotations

from typing import Any


def catalog_rows() -> list[dict[str, Any]]:
    """One row per catalog model, as `feldspar models --json` describes it."""
    from feldspar.labels import human_count, spec_record
    from feldspar.model.catalog import CATALOG

    rows = []
    for spec in CATALOG:
        record = spec_record(spec)
        rows.append({"name": record["name"], "kind": record["kind"], "type": "base" if spec.base else "instruct",
                     "params": human_count(record["params"]), "active": human_count(record["active_params"]),
                     "context": record["context"], "layers": f"{record['attention_layers']} attn / "
                     f"{record['mamba_layers']} mamba", "hub_id": record["hub_id"], "default": record["default"]})
    return rows


def model_kind(config: Any) -> str:
    """hybrid, moe-hybrid or dense, read from the checkpoint's own config (as the catalog names them)."""
    layers = list(getattr(config, "layer_types", None) or [])
    mamba = any(kind in ("mamba", "linear_attention") for kind in layers)  # transformers names Mamba2 layers so
    experts = int(getattr(config, "num_local_experts", 0) or 0) > 0
    if mamba:
        return "moe-hybrid" if experts else "hybrid"
    return "moe" if experts else "dense"


def engine_facts(engine: Any) -> dict[str, Any]:
    """Device, dtype, kind, size, window, whether the weights are random, and what the loader chose
    (dtype, quantisation, compilation) and why, of a loaded engine."""
    model = engine.model
    first = next(model.parameters())
    return {"name": engine.name, "source": engine.resolved.source, "device": str(first.device),
            "dtype": str(first.dtype).removeprefix("torch."), "kind": model_kind(model.config),
            "parameters": sum(p.numel() for p in model.parameters()), "context_window": engine.context_window,
            "layers": int(getattr(model.config, "num_hidden_layers", 0) or 0), "chat": engine.is_chat,
            "random_weights": bool(engine.random_weights), "reuse": bool(engine.options.reuse),
            "choice": dict(getattr(model, "feldspar_choice", {}))}


def cache_stats(engine: Any) -> dict[str, Any]:
    """Bytes used of the budget, snapshots and hit rates of the engine's state cache (none: reuse off)."""
    stats_of = getattr(engine.states, "stats", None)
    if stats_of is None:
        return {"enabled": False}
    stats = dict(stats_of())
    lookups, prompt = stats["lookups"], stats["prompt_tokens"]
    stats.update(enabled=True, hit_rate=stats["hits"] / lookups if lookups else None,
                 token_reuse=stats["reused_tokens"] / prompt if prompt else None,
                 used_share=stats["bytes"] / stats["budget_bytes"] if stats["budget_bytes"] else None)
    return stats
