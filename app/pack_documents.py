"""Read files and folders into Granite documents for a state pack.

Uses retrieval's scanner and loaders, so a folder gets the same per-file decisions as
``feldspar ingest``: unsupported, empty, oversized and outside-symlink files are skipped
with a reason, files whose text cannot be extracted fail with a reason, and the rest become
documents. JSON Lines (``.jsonl``) files are read as text even where the loaders do not
list that type. A pack is refused only when nothing readable is left. Knows files and
loaders; nothing of models, prompts or state.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from feldspar.model.errors import PromptError
from feldspar.retrieval.loaders import Unreadable, decode_text, file_kind, load_file, read_bounded
from feldspar.retrieval.scan import ScannedFile, scan_entry, scan_root, sha256_file

AS_TEXT = (".jsonl",)  # read as plain text when the loaders have no kind for them


@dataclass
class PackDocuments:
    """Documents to prefill, where each came from, and the files left out with why."""

    documents: list[dict[str, Any]] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)


def scan_paths(paths: Sequence[str | Path], max_bytes: int) -> list[ScannedFile]:
    """Every candidate file under ``paths`` (missing paths are a user error, raised at once)."""
    found: list[ScannedFile] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists() and not path.is_symlink():
            raise PromptError(f"no such file or directory: {raw}")
        if path.is_dir():
            root = os.path.realpath(path)
            found.extend(f for f in scan_root(root, max_bytes) if not _hidden(f.key))
        else:
            absolute = os.path.abspath(path)
            found.append(scan_entry(os.path.dirname(absolute), absolute, max_bytes))
    return found


def _hidden(relative: str) -> bool:
    """A path under a scanned folder with a part starting with "." (``.git/…``, ``.hidden.md``): skipped."""
    return any(part.startswith(".") and part not in (".", "..") for part in Path(relative).parts)


def read_pack_documents(paths: Sequence[str | Path], max_bytes: int) -> PackDocuments:
    """Documents (doc_id, title, text, source) for the readable files under ``paths``."""
    result = PackDocuments()
    for scanned in scan_paths(paths, max_bytes):
        shown = scanned.path
        as_text = _read_as_text(scanned)
        if scanned.skip_reason and not as_text:
            result.skipped.append({"path": shown, "status": "skipped", "reason": scanned.skip_reason})
            continue
        try:
            text = _text_of(scanned.path, max_bytes) if as_text else load_file(
                scanned.path, os.path.dirname(scanned.path), max_bytes).text
        except Unreadable as exc:
            result.skipped.append({"path": shown, "status": exc.status, "reason": exc.reason})
            continue
        except OSError as exc:
            result.skipped.append({"path": shown, "status": "failed", "reason": f"cannot read: {exc.strerror or exc}"})
            continue
        if not text.strip():
            result.skipped.append({"path": shown, "status": "skipped", "reason": "no text"})
            continue
        real = os.path.realpath(scanned.path)
        result.documents.append({"doc_id": len(result.documents) + 1, "title": os.path.basename(scanned.key),
                                 "text": text, "source": real})
        result.sources.append({"path": real, "bytes": os.path.getsize(real), "sha256": sha256_file(real)})
    if not result.documents:
        reasons = "; ".join(f"{s['path']}: {s['reason']}" for s in result.skipped[:5])
        raise PromptError("no readable files in " + ", ".join(str(p) for p in paths) + (f" ({reasons})" if reasons else ""))
    return result


def _read_as_text(scanned: ScannedFile) -> bool:
    """A file the scanner skipped only for its type, whose type is plain text after all."""
    name = os.path.basename(scanned.key)
    return (bool(scanned.skip_reason) and scanned.skip_reason.startswith("unsupported type")
            and name.lower().endswith(AS_TEXT) and file_kind(name) is None)


def _text_of(path: str, max_bytes: int) -> str:
    data = read_bounded(path, max_bytes)
    if not data.strip():
        raise Unreadable("skipped", "empty file")
    return decode_text(data)
