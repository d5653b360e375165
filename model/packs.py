"""State packs: documents prefilled once as Granite ``documents`` and saved as model state.

A pack is a directory ``<packs_dir>/<name>/`` with ``state.safetensors`` (the snapshot
after the system turn plus its exact token ids), ``documents.json`` (what was rendered)
and ``pack.json`` (model id, weights fingerprint, dtype, torch/transformers versions,
quantisation, token count and hash, file hashes, sources, sizes). The pack's token ids are the rendered
prompt up to the end of the system turn, so any question asked with the same documents
shares that prefix; loading a pack inserts its snapshot, pinned, into the engine's
``PrefixStateCache`` and the normal prepare() path resumes from it.

Packs are written to a temporary directory and renamed into place, so a pack is either
complete or absent. Loading checks compatibility before reading the state, then the
file hash, then every tensor's shape: a pack from another model, dtype, quantisation or torch /
transformers major.minor, or a truncated or corrupt file, is refused whole (what a state was
made with, and that check, are ``model.pack_identity``'s).

Knows the engine's public surface (model, tokenizer, render/encode, options, states) and
files; nothing of the CLI.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import torch

from feldspar.model.control_tokens import ControlGuard
from feldspar.model.errors import PromptError, StateError
from feldspar.model.pack_identity import (
    check_compatible, dtype_name, file_sha256, ids_sha256, runtime_versions, weights_fingerprint,
)
from feldspar.model.quant import quant_name
from feldspar.model.snapshot import Snapshot, check_shapes, from_tensors, layer_kinds, take_snapshot, to_tensors
from feldspar.model.state_source import FreshState, Progress

PACK_FORMAT = 1
STATE_FILE, META_FILE, DOCS_FILE = "state.safetensors", "pack.json", "documents.json"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
PROBE_QUESTION = "?"
COUNT_CHARS, PIECE_SLACK = 65_536, 2  # tokens_at_least: piece size and per-piece margin


@dataclass
class LoadedPack:
    """A pack read from disk and checked against the engine's model."""

    name: str
    meta: dict[str, Any]
    documents: list[dict[str, Any]]
    token_ids: list[int]
    snapshot: Snapshot
    load_s: float


# ---- names ------------------------------------------------------------------------------
def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name or ""):
        raise StateError(f"invalid pack name {name!r}: use letters, digits, '.', '_' or '-' (max 64), starting with a letter or digit")
    return name


def pack_dir(packs_dir: Path, name: str) -> Path:
    return Path(packs_dir) / check_name(name)


# ---- prompts -----------------------------------------------------------------------------
def prefix_ids(engine, documents: list[dict], tools: list[dict] | None = None) -> list[int]:
    """Token ids of the rendered prompt up to the end of the system turn (before any user turn).

    ``tools`` (OpenAI schemas) are rendered before the documents, so a pack is reusable only by
    a chat that offers exactly these tools; the pack records them (``tools_digest``)."""
    ids = engine.chat_ids([{"role": "user", "content": PROBE_QUESTION}], tools or None, documents)
    cuts = engine.boundaries(ids)
    if not cuts:
        raise PromptError("the chat template put no message boundary after the documents; cannot make a pack")
    return ids[: cuts[0]]


def tools_digest(tools: list[dict] | None) -> str:
    """A stable hash of the tool schemas a pack was prefilled with ("" for none)."""
    if not tools:
        return ""
    return hashlib.sha256(json.dumps(tools, sort_keys=True, default=str).encode()).hexdigest()[:32]


def tool_names(tools: list[dict] | None) -> list[str]:
    return [str((t.get("function") or t).get("name")) for t in tools or []]


def question_ids(engine, documents: list[dict], question: str) -> list[int]:
    return engine.chat_ids([{"role": "user", "content": question}], documents=documents)


# ---- create ------------------------------------------------------------------------------
def check_new_pack(packs_dir: Path, name: str, force: bool = False) -> Path:
    """The directory a new pack would take; refuses a taken name unless ``force``."""
    target = pack_dir(packs_dir, name)
    if target.exists() and not force:
        raise StateError(f"pack {name!r} already exists", fix="replace_pack", name=name)
    return target


def create_pack(engine, packs_dir: Path, name: str, documents: list[dict[str, Any]], sources: list[dict[str, Any]],
                *, force: bool = False, progress: Progress | None = None,
                tools: list[dict] | None = None) -> dict[str, Any]:
    """Prefill ``documents`` (Granite documents), after ``tools`` (the schemas the chats on it will
    offer), and save the state; returns the metadata.

    ``sources`` describe where the documents came from (path, bytes, sha256) and are stored as
    they are; reading files is the caller's job.
    """
    target = check_new_pack(packs_dir, name, force)
    if not documents:
        raise PromptError("a pack needs at least one document")
    at_least = tokens_at_least(engine, documents, engine.context_window)
    if at_least >= engine.context_window:  # refused after counting about one window of text, not all of it
        raise _over_window(engine, name, f"more than {at_least:,}")
    ids = prefix_ids(engine, documents, tools)
    if len(ids) >= engine.context_window:
        raise _over_window(engine, name, f"{len(ids):,}")
    prepared = FreshState().prepare(engine.model, ids, chunk_size=engine.options.prefill_chunk, progress=progress)
    snapshot = take_snapshot(prepared.state, prepared.logits)
    meta = state_metadata(engine, name, ids, sources, documents, prepared.prefill_s)
    meta.update(tools=tool_names(tools), tools_sha256=tools_digest(tools))
    write_atomically(target, snapshot, ids, documents, meta)
    return read_meta(packs_dir, name)


def _over_window(engine, name: str, tokens: str) -> StateError:
    return StateError(f"pack {name!r} would need {tokens} tokens but {engine.name} has a {engine.context_window:,}-token "
                      f"context window (and questions need room too); use fewer or shorter files")


def tokens_at_least(engine, documents: list[dict[str, Any]], limit: int) -> int:
    """A lower bound on the documents' text tokens, counted in newline-cut pieces of at most
    ``COUNT_CHARS`` characters and stopped as soon as it passes ``limit``: so a folder far over
    the window is refused after tokenising about one window's worth of text. Each piece counts
    ``PIECE_SLACK`` tokens less than it has, for merges across the cuts and the template."""
    guard = ControlGuard(engine.tokenizer)
    total = 0
    for document in documents:
        text = str(document.get("text") or "")
        start = 0
        while start < len(text) and total <= limit:
            end = _piece_end(text, start)
            total += max(len(guard.encode(guard.text(text[start:end]))) - PIECE_SLACK, 0)
            start = end
        if total > limit:
            break
    return total


def _piece_end(text: str, start: int) -> int:
    end = min(start + COUNT_CHARS, len(text))
    newline = text.rfind("\n", start, end) if end < len(text) else -1
    return newline + 1 if newline > start else end


def state_metadata(engine, name, ids, sources, documents, prefill_s) -> dict[str, Any]:
    return {
        "format": PACK_FORMAT, "name": name, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": engine.name, "model_source": engine.resolved.source,
        "fingerprint": weights_fingerprint(engine.model), "dtype": dtype_name(engine.model),
        "quant": quant_name(engine.model),
        **runtime_versions(), "tokens": len(ids), "token_ids_sha256": ids_sha256(ids),
        "documents": len(documents), "sources": sources, "prefill_s": round(prefill_s, 3),
    }


def write_state_file(path: Path, snapshot: Snapshot, ids: Sequence[int]) -> None:
    """The snapshot's tensors plus its token ids as one safetensors file."""
    from safetensors.torch import save_file

    tensors = {k: v.cpu() for k, v in to_tensors(snapshot).items()}
    tensors["token_ids"] = torch.tensor(list(ids), dtype=torch.int64)
    save_file(tensors, str(path), metadata={"format": str(PACK_FORMAT), "tokens": str(len(ids))})


def write_atomically(target: Path, snapshot: Snapshot, ids: list[int], documents: list[dict], meta: dict) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.parent / f".tmp-{target.name}-{os.getpid()}"
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir()
    try:
        write_state_file(temp / STATE_FILE, snapshot, ids)
        (temp / DOCS_FILE).write_text(json.dumps(documents, ensure_ascii=False), encoding="utf-8")
        meta.update(state_file_sha256=file_sha256(temp / STATE_FILE), state_bytes=(temp / STATE_FILE).stat().st_size)
        (temp / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")
        _swap_into_place(temp, target)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


def _swap_into_place(temp: Path, target: Path) -> None:
    old = target.parent / f".old-{target.name}-{os.getpid()}"
    if target.exists():
        os.rename(target, old)
    os.rename(temp, target)
    shutil.rmtree(old, ignore_errors=True)


# ---- list / show / rm --------------------------------------------------------------------
def read_meta(packs_dir: Path, name: str) -> dict[str, Any]:
    path = pack_dir(packs_dir, name) / META_FILE
    if not path.parent.is_dir():
        raise StateError(f"no pack named {name!r}", fix="list_packs")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StateError(f"pack {name!r} is corrupt ({path.name}: {exc})", fix="remove_pack", name=name) from None
    if not isinstance(meta, dict) or meta.get("format") != PACK_FORMAT:
        raise StateError(f"pack {name!r} has an unknown format", fix="recreate_pack", name=name)
    return meta


def list_packs(packs_dir: Path) -> list[dict[str, Any]]:
    """One summary per pack directory; a damaged pack is listed with a short ``reason`` (one line)
    and the full ``error``. Only cheap checks (pack.json, the files' presence and size), no hashing."""
    rows = []
    root = Path(packs_dir)
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        if not path.is_dir() or path.name.startswith("."):
            continue
        try:
            meta = read_meta(root, path.name)
        except StateError as exc:
            rows.append({"name": path.name, "reason": _meta_reason(path / META_FILE), "error": str(exc)})
            continue
        row = {key: meta.get(key) for key in ("name", "model", "dtype", "tokens", "documents", "state_bytes", "created")}
        reason = _files_reason(path, meta)
        if reason:
            row.update(reason=reason, error=f"pack {path.name!r} is damaged: {reason}; re-create it")
        rows.append(row)
    return rows


def _meta_reason(path: Path) -> str:
    """Why pack.json could not be used, in a few words."""
    if not path.exists():
        return f"{path.name} is missing"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return f"{path.name} is unreadable"
    except json.JSONDecodeError:
        return f"{path.name} is not valid JSON"
    return f"{path.name} has an unknown format" if not isinstance(meta, dict) or meta.get("format") != PACK_FORMAT \
        else f"{path.name} is unusable"


def _files_reason(directory: Path, meta: dict[str, Any]) -> str:
    """A missing or wrongly sized state file, or missing documents, in a few words ("" if none)."""
    state = directory / STATE_FILE
    if not state.is_file():
        return f"{STATE_FILE} is missing"
    if state.stat().st_size != meta.get("state_bytes"):
        return f"{STATE_FILE} has the wrong size (truncated?)"
    if not (directory / DOCS_FILE).is_file():
        return f"{DOCS_FILE} is missing"
    return ""


def remove_pack(packs_dir: Path, name: str) -> None:
    target = pack_dir(packs_dir, name)
    if not target.is_dir():
        raise StateError(f"no pack named {name!r}", fix="list_packs")
    shutil.rmtree(target)


# ---- load --------------------------------------------------------------------------------
def load_pack(engine, packs_dir: Path, name: str) -> LoadedPack:
    """Read and verify a pack for ``engine``; nothing is half-loaded on any error."""
    started = time.perf_counter()
    meta = read_meta(packs_dir, name)
    check_compatible(meta, engine)
    directory = pack_dir(packs_dir, name)
    ids, snapshot = read_state_file(directory / STATE_FILE, meta, engine.model)
    documents = _read_documents(directory / DOCS_FILE, name)
    return LoadedPack(name, meta, documents, ids, snapshot, time.perf_counter() - started)


def read_state_file(path: Path, meta: dict[str, Any], model: torch.nn.Module) -> tuple[list[int], Snapshot]:
    """Token ids and snapshot from a verified state file, on the model's device."""
    tensors = _read_state(path, meta)
    ids = tensors.pop("token_ids").tolist()
    if len(ids) != meta.get("tokens") or ids_sha256(ids) != meta.get("token_ids_sha256"):
        raise StateError(f"pack {meta.get('name', '?')!r} is corrupt: its token ids do not match pack.json")
    snapshot = from_tensors(tensors, len(ids), layer_kinds(model))
    check_shapes(snapshot, model.config)
    return ids, _to_device(snapshot, next(model.parameters()).device)


def _read_state(path: Path, meta: dict[str, Any]) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    name = meta.get("name", "?")
    if not path.is_file() or path.stat().st_size != meta.get("state_bytes"):
        raise StateError(f"pack {name!r} is truncated or incomplete ({path.name} is missing or has the wrong size); re-create it")
    if file_sha256(path) != meta.get("state_file_sha256"):
        raise StateError(f"pack {name!r} is corrupt ({path.name} does not match its checksum); re-create it")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises several error types for bad files
        raise StateError(f"pack {name!r} is corrupt ({path.name}: {exc}); re-create it") from None


def _read_documents(path: Path, name: str) -> list[dict[str, Any]]:
    try:
        documents = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StateError(f"pack {name!r} is corrupt ({path.name}: {exc}); re-create it") from None
    if not isinstance(documents, list):
        raise StateError(f"pack {name!r} is corrupt ({path.name} is not a list)")
    return documents


def _to_device(snapshot: Snapshot, device: torch.device) -> Snapshot:
    from feldspar.model.snapshot import LayerState

    layers = [LayerState(l.kind, *(t.to(device) if t is not None else None for t in (l.first, l.second)))
              for l in snapshot.layers]
    logits = snapshot.logits.to(device) if snapshot.logits is not None else None
    return Snapshot(snapshot.length, layers, logits)


def install_pack(engine, pack: LoadedPack) -> None:
    """Pin the pack's state in the engine's prefix cache and make the engine resume from it.

    With reuse turned off the engine has no cache: one is created and installed with
    ``engine.use_states``, so generations resume from the pack instead of ignoring it.
    """
    from feldspar.model.state_cache import PrefixStateCache

    cache = engine.states
    if not isinstance(cache, PrefixStateCache):
        cache = PrefixStateCache(budget_bytes=engine.options.cache_budget_bytes,
                                 snapshot_interval=engine.options.snapshot_interval)
    cache.insert(pack.token_ids, pack.snapshot, pinned=True)
    engine.use_states(cache)
