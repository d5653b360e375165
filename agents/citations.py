"""Passages shown to the model and the citations in its answer.

Every passage the model sees gets a thread-unique ``doc_id``; what it was (collection
path, page, character span, heading, score, text) is kept in the graph state. An answer's
``[3]``-style citations are checked against those ids: known ids become sources that map
back to exact spans of ingested files, unknown ids are dropped and reported. Knows hit
dicts as retrieval returns them; nothing of models or graphs.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable

CITATION = re.compile(r"\[(\s*(?:doc[_ ]?(?:id)?\s*[:=]?\s*)?\d+(?:\s*(?:,|;)\s*(?:doc[_ ]?(?:id)?\s*[:=]?\s*)?\d+)*\s*)\]",
                      re.IGNORECASE)
PASSAGE_FIELDS = ("path", "page", "start", "end", "heading", "score", "text", "chunk_id", "collection", "source")


def number_passages(hits: Iterable[dict[str, Any]], first_id: int) -> dict[str, dict[str, Any]]:
    """Hits (retrieval dicts or pack documents) keyed by new doc ids first_id, first_id+1, …"""
    numbered = {}
    for offset, hit in enumerate(hits):
        doc_id = first_id + offset
        numbered[str(doc_id)] = {"doc_id": doc_id, **{k: hit.get(k) for k in PASSAGE_FIELDS if k in hit}}
    return numbered


def passages_for_model(passages: dict[str, dict[str, Any]], given_earlier: list[int] | None = None) -> str:
    """The tool response the model reads: one JSON line per passage (doc_id, title, text), then the
    ids of matching passages it was already given earlier in the conversation."""
    lines = []
    for passage in passages.values():
        title = passage.get("path") or passage.get("source") or ""
        if passage.get("page"):
            title = f"{title} (page {passage['page']})"
        lines.append(json.dumps({"doc_id": passage["doc_id"], "title": title, "text": passage.get("text", "")},
                                ensure_ascii=False))
    if given_earlier:
        lines.append(json.dumps({"also_relevant_doc_ids": given_earlier, "note": "given earlier in this conversation"}))
    return "\n".join(lines) if lines else "No passages matched the query."


def cited_ids(text: str) -> list[str]:
    """Doc ids cited as [3], [1, 2], [doc 4] or [doc_id: 5], in order of first appearance."""
    seen: list[str] = []
    for match in CITATION.finditer(text or ""):
        for number in re.findall(r"\d+", match.group(1)):
            if number not in seen:
                seen.append(number)
    return seen


def resolve_citations(text: str, passages: dict[str, dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """(sources for the cited ids that were given, cited ids that were never given)."""
    sources, unknown = [], []
    for doc_id in cited_ids(text):
        (sources.append(passages[doc_id]) if doc_id in passages else unknown.append(doc_id))
    return sources, unknown


_GONE = "\ufdd0"  # a Unicode noncharacter: where a marker was removed, until the spaces are tidied
_GAP = re.compile(f"[ \t]*{_GONE}(?:[ \t]*{_GONE})*[ \t]*")


def strip_unknown(text: str, unknown: list[str]) -> str:
    """Remove citations of ids the model was never given, single (``[99]``) or grouped (``[1, 99]``
    becomes ``[1]``); a removed marker takes its spaces along, leaving no doubled space."""
    if not unknown:
        return text
    dropped = set(unknown)

    def keep(match: re.Match[str]) -> str:
        numbers = re.findall(r"\d+", match.group(1))
        kept = [n for n in numbers if n not in dropped]
        if len(kept) == len(numbers):
            return match.group(0)
        return "[" + ("; " if ";" in match.group(1) else ", ").join(kept) + "]" if kept else _GONE

    return _GAP.sub(_tidy, CITATION.sub(keep, text.replace(_GONE, "")))


def _tidy(gap: re.Match[str]) -> str:
    before = gap.string[gap.start() - 1] if gap.start() else "\n"
    after = gap.string[gap.end()] if gap.end() < len(gap.string) else "\n"
    if before == "\n" or after in "\n.,;:!?)":
        return ""
    return " " if gap.group(0).strip(_GONE) else ""
