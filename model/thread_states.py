"""A conversation's model state on disk, so a follow-up in a new process resumes instead of recomputing.

After a turn, ``save_thread_state`` writes the deepest snapshot the engine's prefix cache
holds for the ids it last consumed (the prompt plus the reply) and, when the reply's
re-rendered text may not re-tokenise to the same ids, also the one at the end of the
prompt (Mamba state cannot be cropped back, so a follow-up that diverges inside the
reply resumes from there). Each is a directory in the state-pack format
(``<states_dir>/<key>/`` and ``<key>.prompt/``: state.safetensors + pack.json, written
atomically); then ``save_thread_state`` evicts
the least recently used saved states beyond ``budget_bytes``. ``restore_thread_state``
checks the saved state against the engine exactly as a pack is checked (model weights,
dtype, torch/transformers version, file hash, shapes) and inserts it, unpinned, into the
prefix cache. Knows the engine's cache and the pack file format; nothing of threads,
messages or agents: a key is just a name.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Sequence

from feldspar.model.pack_identity import check_compatible
from feldspar.model.packs import (
    META_FILE, STATE_FILE, pack_dir, read_meta, read_state_file, state_metadata, write_atomically,
)


PROMPT_SUFFIX = ".prompt"


def save_thread_state(engine, states_dir: Path, key: str, ids: Sequence[int], budget_bytes: int,
                      prompt_ids: Sequence[int] = ()) -> list[dict[str, Any]]:
    """Save the deepest cached states along ``ids`` (and ``prompt_ids``); [] when reuse is off."""
    deepest = getattr(engine.states, "deepest", None)
    if deepest is None or budget_bytes <= 0:
        return []
    saved = []
    for name, along in ((key, ids), (key + PROMPT_SUFFIX, prompt_ids)):
        snapshot = deepest(along) if along else None
        if snapshot is None or any(m["tokens"] == snapshot.length for m in saved):
            shutil.rmtree(pack_dir(states_dir, name), ignore_errors=True)
            continue
        kept = list(along)[: snapshot.length]
        meta = {**state_metadata(engine, name, kept, [], [], 0.0), "kind": "thread-state"}
        write_atomically(pack_dir(states_dir, name), snapshot, kept, [], meta)
        saved.append(meta)
    evict_least_recent(states_dir, budget_bytes, keep=(key, key + PROMPT_SUFFIX))
    return saved


def restore_thread_state(engine, states_dir: Path, key: str) -> int:
    """Insert the saved states into the engine's cache; returns the deepest one's tokens (0: none)."""
    from feldspar.model.state_cache import PrefixStateCache

    if not isinstance(engine.states, PrefixStateCache):
        return 0
    restored = 0
    for name in (key + PROMPT_SUFFIX, key):
        directory = pack_dir(states_dir, name)
        if not (directory / META_FILE).is_file():
            continue
        meta = read_meta(states_dir, name)
        check_compatible(meta, engine)
        ids, snapshot = read_state_file(directory / STATE_FILE, meta, engine.model)
        engine.states.insert(ids, snapshot)
        os.utime(directory / META_FILE)  # recently used
        restored = max(restored, len(ids))
    return restored


def remove_thread_state(states_dir: Path, key: str) -> None:
    for name in (key, key + PROMPT_SUFFIX):
        shutil.rmtree(pack_dir(states_dir, name), ignore_errors=True)


def saved_states(states_dir: Path) -> list[tuple[float, int, Path]]:
    """(last used, bytes, directory) of every saved state, least recently used first."""
    found = []
    for directory in Path(states_dir).iterdir() if Path(states_dir).is_dir() else []:
        meta = directory / META_FILE
        if directory.is_dir() and not directory.name.startswith(".") and meta.is_file():
            size = sum(f.stat().st_size for f in directory.iterdir() if f.is_file())
            found.append((meta.stat().st_mtime, size, directory))
    return sorted(found)


def evict_least_recent(states_dir: Path, budget_bytes: int, keep: tuple[str, ...] = ()) -> list[str]:
    """Remove least recently used states until the rest fit ``budget_bytes``; returns removed keys."""
    states = saved_states(states_dir)
    total, removed = sum(size for _, size, _ in states), []
    for _, size, directory in states:
        if total <= budget_bytes:
            break
        if directory.name in keep:
            continue
        shutil.rmtree(directory, ignore_errors=True)
        total -= size
        removed.append(directory.name)
    return removed
