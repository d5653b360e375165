"""The prefix state cache: resume every prompt from the deepest exact snapshot of its prefix.

A radix tree over token ids remembers every prompt (and every generated continuation)
the engine has run; some tree positions hold a ``Snapshot`` of the model state after
exactly that many tokens. ``prepare`` finds the longest cached prefix of a new prompt,
restores the deepest snapshot at or before it (Mamba state cannot be cropped back, so
reuse is exact only from an exact-position snapshot) and computes only the rest. While
computing it snapshots at chat-message boundaries, where the prompt diverges from the
cached path, every ``snapshot_interval`` tokens, and at the end of the prompt (with the
next-token logits, so an exact repeat needs no compute at all).

Snapshots of one chain of forwards share their attention KV (shorter ones hold views of
the longest). Memory is bounded by ``budget_bytes``; eviction removes the snapshot with
the fewest tokens of compute saved per byte freed, weighted by recency. Pinned snapshots
(state packs) are never evicted.

Implements ``model.state_source.StateSource``. Knows token ids, model states and bytes;
nothing of text, chat templates, files or packs on disk.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from feldspar.model.errors import StateError
from feldspar.model.generation import ModelState, new_state, prefill
from feldspar.model.snapshot import (
    Snapshot, detach_kv, restore, share_kv_prefix, state_bytes, storage_bytes, take_snapshot,
)
from feldspar.model.state_source import Prepared, Progress, progress_callback

RECENCY_HALF_LIFE = 16  # cache operations after which an unused snapshot's score halves
MAX_OPEN_LINEAGES = 8
ATTENTION_ELEMENTS = 1 << 26  # chunk x context bound per prefill forward (mask/scores size)
MIN_CHUNK = 256
SEGMENT_CHUNKS = 4  # chunks per segment before the chunk size is recomputed


# ---- radix tree over token ids --------------------------------------------------------
@dataclass(eq=False)
class Entry:
    """A stored snapshot and its bookkeeping."""

    snapshot: Snapshot
    node: "Node"
    last_used: int
    pinned: bool = False


@dataclass(eq=False)
class Node:
    """A tree position: ``edge`` are the tokens from the parent; ``depth`` tokens from the root."""

    edge: np.ndarray
    depth: int
    parent: "Node | None" = None
    children: dict[int, "Node"] = field(default_factory=dict)
    entry: Entry | None = None


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    size = min(len(a), len(b))
    diff = np.flatnonzero(a[:size] != b[:size])
    return int(diff[0]) if len(diff) else size


class PrefixTree:
    """Token-id paths with nodes at every branch point and every snapshot position."""

    def __init__(self) -> None:
        self.root = Node(edge=np.empty(0, dtype=np.int64), depth=0)

    def match(self, ids: np.ndarray) -> tuple[int, list[Node]]:
        """Longest cached prefix length of ``ids`` and the nodes passed completely on the way."""
        node, pos, passed = self.root, 0, [self.root]
        while pos < len(ids):
            child = node.children.get(int(ids[pos]))
            if child is None:
                break
            same = common_prefix(child.edge, ids[pos:])
            pos += same
            if same < len(child.edge):
                break
            node = child
            passed.append(node)
        return pos, passed

    def insert(self, ids: np.ndarray) -> Node:
        """The node at depth ``len(ids)`` on the path ``ids``, created (splitting edges) if needed."""
        node, pos = self.root, 0
        while pos < len(ids):
            child = node.children.get(int(ids[pos]))
            if child is None:
                leaf = Node(edge=ids[pos:].copy(), depth=len(ids), parent=node)
                node.children[int(ids[pos])] = leaf
                return leaf
            same = common_prefix(child.edge, ids[pos:])
            if same < len(child.edge):
                child = self._split(child, same)
            node, pos = child, pos + same
        return node

    @staticmethod
    def _split(node: Node, keep: int) -> Node:
        parent = node.parent
        assert parent is not None
        middle = Node(edge=node.edge[:keep].copy(), depth=node.depth - len(node.edge) + keep, parent=parent)
        parent.children[int(middle.edge[0])] = middle
        node.edge = node.edge[keep:].copy()
        node.parent = middle
        middle.children[int(node.edge[0])] = node
        return middle

    @staticmethod
    def prune(node: Node) -> None:
        """Drop ``node`` and its ancestors while they are leaves holding no snapshot."""
        while node.parent is not None and not node.children and node.entry is None:
            del node.parent.children[int(node.edge[0])]
            node = node.parent


def nearest_stored_ancestor(node: Node) -> int:
    """Depth of the closest ancestor holding a snapshot (0 if none)."""
    up = node.parent
    while up is not None and up.entry is None:
        up = up.parent
    return up.depth if up is not None else 0


def _freed_bytes(entry: Entry, refs: dict[int, int]) -> int:
    """Bytes that dropping ``entry`` releases: storages no other snapshot uses."""
    own = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in entry.snapshot.tensors()}
    return sum(size for ptr, size in own.items() if refs.get(ptr, 0) <= 1)


def bounded_chunk(position: int, chunk_size: int) -> int:
    """Prefill chunk at ``position``: chunk x context stays under ATTENTION_ELEMENTS (>= MIN_CHUNK).

    The attention mask and scores of one forward grow with chunk length x context length;
    shrinking the chunk as the context grows keeps a 128K-token prefill's peak memory flat.
    """
    bound = ATTENTION_ELEMENTS // max(position, 1)
    power_of_two = 1 << (bound.bit_length() - 1) if bound > 0 else 0  # whole Mamba scan chunks
    return max(MIN_CHUNK, min(chunk_size, power_of_two))


def bounded_segments(start: int, total: int, chunk_size: int) -> list[tuple[int, int]]:
    """(segment end, chunk size) pairs covering (start, total], chunk shrinking with position."""
    segments, pos = [], start
    while pos < total:
        chunk = bounded_chunk(pos + chunk_size, chunk_size)
        end = min(total, pos + chunk * SEGMENT_CHUNKS)
        segments.append((end, chunk))
        pos = end
    return segments


# ---- the cache -------------------------------------------------------------------------
class PrefixStateCache:
    """A ``StateSource`` that reuses exact-position snapshots of earlier prompts."""

    def __init__(self, budget_bytes: int, snapshot_interval: int = 4096) -> None:
        if snapshot_interval < 1:
            raise StateError("snapshot_interval must be at least 1 token")
        self.budget_bytes = int(budget_bytes)
        self.snapshot_interval = int(snapshot_interval)
        self.tree = PrefixTree()
        self.entries: list[Entry] = []
        self.clock = 0
        self._lineages: dict[int, tuple[weakref.ref, list[Entry]]] = {}
        self.lookups = self.hits = self.prompt_tokens_seen = self.reused_tokens_seen = 0  # stats (UI, benches)

    # ---- StateSource ---------------------------------------------------------------
    def prepare(self, model: torch.nn.Module, ids: Sequence[int], *, chunk_size: int,
                boundaries: Sequence[int] = (), progress: Progress | None = None) -> Prepared:
        tokens = np.asarray(list(ids), dtype=np.int64)
        if len(tokens) == 0:
            raise ValueError("prepare needs at least one token")
        self.check_budget(model)
        self.clock += 1
        started = time.perf_counter()
        matched, passed = self.tree.match(tokens)
        resume = self._resume_entry(passed, len(tokens))
        self._count(len(tokens), resume.snapshot.length if resume else 0)
        state = restore(resume.snapshot, model) if resume else new_state(model)
        restored = time.perf_counter()
        if resume is not None:
            resume.last_used = self.clock
            if state.length == len(tokens):
                return self._exact_hit(state, resume, started, restored)
        logits, taken = self._compute(model, state, tokens, matched, chunk_size, boundaries, progress)
        self._store(tokens, taken, resume, state)
        done = time.perf_counter()
        start = resume.snapshot.length if resume else 0
        return Prepared(state, logits, reused_tokens=start, computed_tokens=len(tokens) - start,
                        restore_s=restored - started, prefill_s=done - restored)

    def remember(self, ids: Sequence[int], state: ModelState) -> None:
        """Snapshot the state a generation ended in, so the next turn resumes after the reply."""
        lineage = self._pop_lineage(state)
        if state.length != len(ids) or state.length == 0:
            return
        self.clock += 1
        tokens = np.asarray(list(ids), dtype=np.int64)
        entry = self._attach(tokens, take_snapshot(state))
        self._share_lineage([e for e in lineage if e in self.entries], entry)
        self._evict(keep=entry)

    # ---- public extras (packs, stats) ----------------------------------------------
    def insert(self, ids: Sequence[int], snapshot: Snapshot, pinned: bool = False) -> None:
        """Store an externally made snapshot (a state pack) for the prefix ``ids``."""
        if snapshot.length != len(ids):
            raise StateError(f"snapshot covers {snapshot.length} tokens but {len(ids)} token ids were given")
        pinned_bytes = sum(e.snapshot.nbytes for e in self.entries if e.pinned) + snapshot.nbytes
        if pinned and pinned_bytes > self.budget_bytes:
            raise StateError(
                f"the loaded state needs {pinned_bytes:,} bytes but the state cache budget is "
                f"{self.budget_bytes:,} bytes", fix="cache_budget")
        self.clock += 1
        entry = self._attach(np.asarray(list(ids), dtype=np.int64), snapshot)
        entry.pinned = entry.pinned or pinned
        self._evict(keep=entry)

    def deepest(self, ids: Sequence[int]) -> Snapshot | None:
        """The deepest stored snapshot of a prefix of ``ids``, the full length included (logits or not)."""
        tokens = np.asarray(list(ids), dtype=np.int64)
        if len(tokens) == 0:
            return None
        _, passed = self.tree.match(tokens)
        entry = self._resume_entry(passed, len(tokens) + 1)
        return entry.snapshot if entry else None

    @property
    def total_bytes(self) -> int:
        return storage_bytes(t for e in self.entries for t in e.snapshot.tensors())

    def snapshot_lengths(self) -> list[int]:
        return sorted(e.snapshot.length for e in self.entries)

    def check_budget(self, model: torch.nn.Module) -> None:
        """Refuse before any compute if the budget cannot hold even one snapshot of ``model``."""
        dtype = next(model.parameters()).dtype
        one = state_bytes(model.config, dtype, 1) + model.config.vocab_size * 4
        if self.budget_bytes < one:
            raise StateError(
                f"the state cache budget ({self.budget_bytes:,} bytes) is smaller than one snapshot of this "
                f"model ({one:,} bytes)", fix="cache_budget_or_no_reuse")

    def _count(self, prompt_tokens: int, reused_tokens: int) -> None:
        self.lookups += 1
        self.hits += reused_tokens > 0
        self.prompt_tokens_seen += prompt_tokens
        self.reused_tokens_seen += reused_tokens

    def stats(self) -> dict[str, int]:
        """Bytes held of the budget, snapshots, and how often prompts resumed from a saved state."""
        return {"bytes": self.total_bytes, "budget_bytes": self.budget_bytes, "snapshots": len(self.entries),
                "lookups": self.lookups, "hits": self.hits, "prompt_tokens": self.prompt_tokens_seen,
                "reused_tokens": self.reused_tokens_seen}

    # ---- internals ------------------------------------------------------------------
    @staticmethod
    def _resume_entry(passed: list[Node], total: int) -> Entry | None:
        """Deepest snapshot on the matched path; at the full length only if it has logits."""
        for node in reversed(passed):
            entry = node.entry
            if entry is None:
                continue
            if node.depth < total or entry.snapshot.logits is not None:
                return entry
        return None

    def _exact_hit(self, state: ModelState, entry: Entry, started: float, restored: float) -> Prepared:
        logits = entry.snapshot.logits.clone()
        self._open_lineage(state, [entry])
        return Prepared(state, logits, reused_tokens=state.length, computed_tokens=0,
                        restore_s=restored - started, prefill_s=0.0)

    def snapshot_points(self, start: int, total: int, matched: int, boundaries: Sequence[int]) -> set[int]:
        """Positions in (start, total) to snapshot at: boundaries, divergence, every interval."""
        points = {p for p in boundaries if start < p < total}
        if start < matched < total:
            points.add(matched)
        first = (start // self.snapshot_interval + 1) * self.snapshot_interval
        points.update(range(first, total, self.snapshot_interval))
        return points

    def _compute(self, model, state, tokens, matched, chunk_size, boundaries, progress):
        start, total = state.length, len(tokens)
        points = self.snapshot_points(start, total, matched, boundaries)
        taken: list[Snapshot] = []
        report = progress_callback(progress, start, total - start)

        def on_chunk(current: ModelState, position: int) -> None:
            if position in points:
                taken.append(take_snapshot(current))
            if report is not None:
                report(current, position)

        logits = None
        for segment_end, chunk in bounded_segments(start, total, chunk_size):
            piece = tokens[state.length: segment_end].tolist()
            logits = prefill(model, state, piece, chunk, stops=sorted(points), on_chunk=on_chunk)
        taken.append(take_snapshot(state, logits))
        return logits, taken

    def _store(self, tokens: np.ndarray, taken: list[Snapshot], resume: Entry | None, state: ModelState) -> None:
        self.tree.insert(tokens)
        entries = [self._attach(tokens[: snap.length], snap) for snap in taken]
        final = entries[-1]
        lineage = ([resume] if resume else []) + entries[:-1]
        self._share_lineage(lineage, final)
        self._open_lineage(state, lineage + [final])
        self._evict(keep=final)

    def _attach(self, tokens: np.ndarray, snapshot: Snapshot) -> Entry:
        node = self.tree.insert(tokens)
        old = node.entry
        if old is not None and old.pinned and old.snapshot.length == snapshot.length:
            old.last_used = self.clock
            return old
        if old is not None:
            self._drop(old, prune=False)
        entry = Entry(snapshot=snapshot, node=node, last_used=self.clock)
        node.entry = entry
        self.entries.append(entry)
        return entry

    def _share_lineage(self, lineage: list[Entry], longest: Entry) -> None:
        for entry in lineage:
            if entry is not longest and entry.snapshot.length <= longest.snapshot.length:
                share_kv_prefix(entry.snapshot, longest.snapshot)

    def _open_lineage(self, state: ModelState, lineage: list[Entry]) -> None:
        """Remember which stored snapshots ``state`` descends from (their KV is its KV prefix)."""
        self._lineages[id(state)] = (weakref.ref(state), lineage)
        while len(self._lineages) > MAX_OPEN_LINEAGES:
            self._lineages.pop(next(iter(self._lineages)))

    def _pop_lineage(self, state: ModelState) -> list[Entry]:
        ref, lineage = self._lineages.pop(id(state), (None, []))
        return lineage if ref is not None and ref() is state else []

    # ---- eviction -------------------------------------------------------------------
    def _evict(self, keep: Entry | None = None) -> None:
        while self.total_bytes > self.budget_bytes:
            candidates = [e for e in self.entries if not e.pinned and e is not keep]
            if not candidates:
                candidates = [e for e in self.entries if not e.pinned]
            if not candidates:
                return
            refs = self._storage_refs()
            self._drop(min(candidates, key=lambda e: self._score(e, refs)))

    def _score(self, entry: Entry, refs: dict[int, int]) -> float:
        """Tokens of compute this snapshot saves per byte it frees, decayed by disuse."""
        saved = entry.snapshot.length - nearest_stored_ancestor(entry.node)
        age = self.clock - entry.last_used
        return saved / max(_freed_bytes(entry, refs), 1) * 0.5 ** (age / RECENCY_HALF_LIFE)

    def _storage_refs(self) -> dict[int, int]:
        """How many stored snapshots use each tensor storage."""
        refs: dict[int, int] = {}
        for entry in self.entries:
            for ptr in {t.untyped_storage().data_ptr() for t in entry.snapshot.tensors()}:
                refs[ptr] = refs.get(ptr, 0) + 1
        return refs

    def _drop(self, entry: Entry, prune: bool = True) -> None:
        self.entries.remove(entry)
        entry.node.entry = None
        self._rehome_views(entry)
        if prune:
            PrefixTree.prune(entry.node)

    def _rehome_views(self, gone: Entry) -> None:
        """Snapshots that viewed ``gone``'s KV now view the longest of them (compacted)."""
        ptrs = {t.untyped_storage().data_ptr() for t in gone.snapshot.tensors()}
        sharers = [e for e in self.entries if any(t.untyped_storage().data_ptr() in ptrs for t in e.snapshot.tensors())]
        if not sharers:
            return
        longest = max(sharers, key=lambda e: e.snapshot.length)
        detach_kv(longest.snapshot)
        for entry in sharers:
            if entry is not longest:
                share_kv_prefix(entry.snapshot, longest.snapshot)
