"""Where a model name points, without loading anything: catalog name, hub id or local directory.

Imports neither torch nor transformers, so a command can refuse a mistyped name or a missing
directory in a fraction of a second, before the slow imports (``model.loader`` re-exports these).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from feldspar.model.errors import CheckpointError, ModelNotFoundError

RANDOM_MARKER_FILE = "feldspar_random.json"  # marks a random-weight checkpoint (model/checkpoint_random.py)


@dataclass(frozen=True)
class Resolved:
    """Where a model name points: a local directory or a hub id (and its catalog name)."""

    source: str
    local: bool
    catalog_name: str | None = None


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve(name: str) -> Resolved:
    """Map a user-given model name to a local dir or a hub id, or raise with suggestions."""
    from feldspar.model.catalog import find_spec, get_spec

    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"{name} is a file; a checkpoint is a directory with config.json and weights")
        spec = find_spec(path.name)
        return Resolved(str(path.resolve()), True, spec.name if spec else None)
    spec = find_spec(name)
    if spec is not None:
        return Resolved(spec.hub_id, False, spec.name)
    if "/" in name and not name.startswith((".", "/", "~")):
        return Resolved(name, False, None)
    if name.startswith((".", "/", "~")) or os.sep in name:
        raise ModelNotFoundError(f"no such directory: {name} (a local checkpoint is a directory with config.json "
                                 "and weights)")
    get_spec(name)  # raises ModelNotFoundError with close matches
    raise ModelNotFoundError(f"unknown model {name!r}")  # pragma: no cover
