"""Read a span of an ingested file: only files of the collection, never a path outside it.

``read_span`` resolves the path it is given (normally a search hit's ``path``, relative
to its ingest root; an absolute path inside a root works too) against the manifest's
*indexed* rows of one collection. Only an exact row is served, so ``..``, absolute paths
elsewhere and files that were never ingested are refused before anything is opened. The
file is then read by ``loaders.load_file``, the extraction ingest chunked, so a hit's
character offsets index into the text returned here; ``load_file`` also refuses a file
whose real path (after symlinks, checked when it is opened) has left its root. A file
changed since it was indexed is still served, and flagged.

Extraction runs in the calling process (callers bound its time: the agent runs tools in
a worker thread with a timeout). This module does not know about Chroma, embeddings,
search, or who calls it.
"""

from __future__ import annotations

import difflib
import os
import posixpath
from typing import Any

from feldspar.retrieval.errors import RetrievalError
from feldspar.retrieval.loaders import Unreadable, load_file
from feldspar.retrieval.manifest import FileRecord, Manifest

MAX_SUGGESTIONS = 3
SUGGESTION_POOL = 5000  # fuzzy suggestions are only computed over this many names


class DocumentNotFound(RetrievalError):
    """The path names no indexed file of the collection."""


class DocumentUnreadable(RetrievalError):
    """The file is in the collection but cannot be read now (gone, changed type, left its root)."""


class InvalidSpan(RetrievalError):
    """Character offsets outside the document or in the wrong order."""


def resolve_document(manifest: Manifest, collection: str, path: str) -> tuple[str, str]:
    """``(root, path)`` of the one indexed file of ``collection`` that ``path`` names."""
    rows = manifest.sources(collection, "indexed")
    wanted = _normalise(path)
    if wanted is None:
        matches = []
    elif os.path.isabs(wanted):
        matches = [row for row in rows if os.path.normpath(os.path.join(row["root"], row["path"])) == wanted]
    else:
        matches = [row for row in rows if row["path"] == wanted]
    if not matches:
        raise DocumentNotFound(_not_found_message(collection, path, rows))
    if len(matches) > 1:
        places = ", ".join(os.path.join(row["root"], row["path"]) for row in matches[:5])
        raise DocumentNotFound(f"{path!r} names several files of collection {collection!r} ({places}); "
                               f"give the full path")
    return matches[0]["root"], matches[0]["path"]


def read_span(manifest: Manifest, collection: str, path: str, start: int | None, end: int | None,
              max_bytes: int) -> dict[str, Any]:
    """The text of characters ``[start, end)`` of an indexed file, with its pages and place."""
    root, key = resolve_document(manifest, collection, path)
    target = os.path.join(root, key)
    try:
        extracted = load_file(target, root, max_bytes)
    except Unreadable as exc:
        raise DocumentUnreadable(f"cannot read {key!r} of collection {collection!r}: {exc.reason}") from None
    except OSError as exc:
        raise DocumentUnreadable(f"cannot read {key!r} of collection {collection!r}: "
                                 f"{exc.strerror or exc}") from None
    total = len(extracted.text)
    first, last = _span(key, start, end, total)
    pages = [number for number, page_start, page_end in extracted.pages
             if page_start <= first < page_end or (page_start < last and page_end > first)]
    return {"path": key, "root": root, "start": first, "end": last, "total_chars": total,
            "text": extracted.text[first:last], "page": pages[0] if pages else None, "pages": pages,
            "changed_since_indexed": _changed(manifest.files_under(collection, root).get(key), target)}


def _normalise(path: str) -> str | None:
    if not isinstance(path, str) or "\x00" in path or not path.strip():
        return None
    text = path.strip()
    if os.path.isabs(text):
        return os.path.normpath(text)
    return posixpath.normpath(text.replace("\\", "/"))


def _span(key: str, start: int | None, end: int | None, total: int) -> tuple[int, int]:
    first = 0 if start is None else start
    last = total if end is None else min(end, total)
    if first < 0 or (end is not None and end < first):
        raise InvalidSpan(f"invalid span {start}..{end} of {key!r}: need 0 <= start <= end")
    if first > total:
        raise InvalidSpan(f"start {first} is past the end of {key!r} ({total} characters)")
    return first, last


def _changed(record: FileRecord | None, target: str) -> bool:
    try:
        stat = os.stat(target)
    except OSError:
        return True
    return record is None or (stat.st_size, stat.st_mtime_ns) != (record.size, record.mtime_ns)


def _not_found_message(collection: str, path: Any, rows: list[dict[str, Any]]) -> str:
    shown = repr(path)[:200]
    if not rows:
        return f"{shown} is not a file of collection {collection!r}: it has no indexed files"
    suggestions = _suggestions(str(path), [row["path"] for row in rows])
    hint = f"; did you mean {', '.join(repr(s) for s in suggestions)}?" if suggestions else ""
    return f"{shown} is not a file of collection {collection!r}{hint}"


def _suggestions(path: str, keys: list[str]) -> list[str]:
    base = posixpath.basename(path.replace("\\", "/"))
    same_name = [key for key in keys if posixpath.basename(key) == base]
    if same_name:
        return same_name[:MAX_SUGGESTIONS]
    return difflib.get_close_matches(path, keys[:SUGGESTION_POOL], n=MAX_SUGGESTIONS, cutoff=0.6)
