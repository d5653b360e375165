"""Reindex beside the old collection: build under a staging name, switch only when complete.

``--reindex`` never drops the collection first. The new index is built, with the same
crash-safe writer as any ingest, in a staging collection (``staging_name``: a fixed name
per collection, so re-running the same command resumes it), with its own manifest rows;
the old collection keeps answering searches meanwhile. When the build completes, the
switch runs in steps that each converge after kill -9: (1) the manifest records the swap,
(2) the old collection is dropped from the store, (3) the staging collection is renamed,
(4) one manifest transaction moves the staging rows under the collection's name and
forgets the swap. ``finish_pending`` redoes whatever steps a killed switch left undone;
every ingest calls it first.

This module does not know how files are parsed or written, nor about the CLI.
"""

from __future__ import annotations

import hashlib

from feldspar.retrieval import crashpoints
from feldspar.retrieval.manifest import Manifest
from feldspar.retrieval.store import ChromaStore


def staging_name(name: str) -> str:
    """The collection a reindex of ``name`` is built in (hidden from listings)."""
    return "feldspar-reindex-" + hashlib.sha256(name.encode()).hexdigest()[:16]


def begin(store: ChromaStore, manifest: Manifest, name: str, model: str, precision: str, chunking: str) -> str:
    """The staging collection to build into: kept (resumed) when made with this model and precision.

    Its chunking is recorded from the start, so a resumed build with other chunk settings
    re-chunks what the interrupted one wrote."""
    staging = staging_name(name)
    recorded = store.recorded(staging)
    if recorded is not None and recorded != (model, precision):
        store.drop(staging)
        recorded = None
    if recorded is None:  # a staging without its collection: its rows describe nothing
        manifest.drop_collection(staging)
    if not manifest.chunking(staging):
        manifest.set_chunking(staging, chunking)
    return staging


def switch(store: ChromaStore, manifest: Manifest, name: str, staging: str) -> None:
    """The complete staging collection replaces ``name``."""
    manifest.mark_swap(name, staging)
    crashpoints.reached("swap_marked")
    finish_pending(store, manifest, name)


def finish_pending(store: ChromaStore, manifest: Manifest, name: str) -> None:
    """Complete a switch of ``name`` that a kill interrupted (nothing to do without one)."""
    staging = manifest.swap_of(name)
    if staging is None:
        return
    if store.recorded(staging) is not None:  # not renamed yet
        store.drop(name)
        crashpoints.reached("swap_dropped")
        store.rename(staging, name)
        crashpoints.reached("swap_renamed")
    manifest.finish_swap(name, staging)
