"""Feldspar: run IBM Granite 4.0 for retrieval-augmented answers and agents.

The public Python entry points, imported lazily so that ``import feldspar`` loads neither
torch nor chromadb (nor pydantic) until a name below is first used:

- ``Settings`` / ``load_settings``: one configuration (defaults < config.toml < FELDSPAR_* < keywords).
- ``build_engine(settings)``: the Granite engine (generation with hybrid state reuse).
- ``build_retrieval(settings)``: the retrieval service (ingest + hybrid search) for a collection.
- ``Feldspar(settings=None, **overrides)``: the Python API (ask, stream, batch, ingest, search …),
  returning ``Answer``s; see docs/python-api.md.

Subpackages: ``feldspar.model`` (Granite on torch + transformers), ``feldspar.retrieval``
(Chroma + sentence-transformers), ``feldspar.agents``, ``feldspar.ui``, ``feldspar.bench``.
This module knows the names it exports and where they live, nothing more.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Settings": "feldspar.settings",
    "load_settings": "feldspar.settings",
    "SettingsError": "feldspar.settings",
    "build_engine": "feldspar.compose",
    "build_retrieval": "feldspar.compose",
    "Feldspar": "feldspar.api",
    "Answer": "feldspar.api",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # pragma: no cover
    from feldspar.api import Answer, Feldspar
    from feldspar.compose import build_engine, build_retrieval
    from feldspar.settings import Settings, SettingsError, load_settings


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'feldspar' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
