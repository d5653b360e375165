"""The composition root: the one place that builds Feldspar's parts from one Settings.

Every other package receives plain arguments; only this module reads Settings fields
and decides which concrete classes to use. Imports are local so `feldspar --help`
stays fast and a part that is not used is never loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    from model.engine import Engine


def build_engine(settings: Settings, model: str | None = None) -> "Engine":
    """Load the Granite engine named by ``model`` or ``settings.model``."""
    from model.engine import Engine, EngineOptions

    options = EngineOptions(
        device=settings.device,
        dtype=settings.dtype,
        prefill_chunk=settings.prefill_chunk,
        reuse=settings.reuse,
        cache_budget_bytes=settings.cache_budget_bytes,
        snapshot_interval=settings.snapshot_interval,
    )
    return Engine.load(model or settings.model, options)


def build_retrieval(settings: Settings):
    """Build the retrieval service (ingest + search) for ``settings.collection``."""
    raise NotImplementedError("filled in by the retrieval layer")
