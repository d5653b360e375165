"""Evaluation of answers: did the agent cite the right files and say the expected facts?

Each question may carry ``expected_sources`` (file paths or names) and/or ``expected_facts``
(strings). Per question, from the answer record ``run_batch`` writes:

- ``source_recall``: the share of expected sources among the cited sources (a source
  matches a cited path when it is that path, its tail after a ``/`` or its file name);
- ``citation_precision``: the share of cited passages whose text contains an expected fact;
- ``exact_match``: the answer (citation markers removed, normalised) is one of the facts;
- ``contains``: the share of expected facts found in the answer (normalised).

Normalising lowercases, drops punctuation and squeezes whitespace. A metric with nothing to
measure (no expected facts, no citations) is ``None`` and left out of the means. Knows answer
records; nothing of how the answers were made.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import replace
from statistics import fmean
from typing import Any, Iterable

from feldspar.agents.batch import BadLine, BatchItem

EXPECTED_KEYS = ("expected_sources", "expected_facts")
_CITATION = re.compile(r"\[\s*(?:doc[_ ]?(?:id)?\s*[:=]?\s*)?[\w.-]+\s*\]", re.IGNORECASE)
METRICS = ("source_recall", "citation_precision", "exact_match", "contains")


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text)
    return " ".join(text.split())


def strip_citations(text: str) -> str:
    return _CITATION.sub(" ", text)


def _strings(value: Any, key: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f'"{key}" must be a string or a list of non-empty strings')
    return list(value)


def require_expectations(items: Iterable[BatchItem]) -> tuple[list[BatchItem], list[BadLine]]:
    """Items with valid expected_sources/expected_facts (lists of strings), and the lines without any."""
    good, bad = [], []
    for item in items:
        try:
            expected = {key: _strings(item.extra.get(key), key) for key in EXPECTED_KEYS}
        except ValueError as exc:
            bad.append(BadLine(item.line, str(exc)))
            continue
        if not any(expected.values()):
            bad.append(BadLine(item.line, 'needs "expected_sources" and/or "expected_facts"'))
            continue
        good.append(replace(item, extra=expected))
    return good, bad


def source_matches(expected: str, path: str | None) -> bool:
    if not path:
        return False
    expected, path = expected.strip().replace("\\", "/"), str(path).replace("\\", "/")
    return path == expected or path.endswith("/" + expected.lstrip("/")) or path.rsplit("/", 1)[-1] == expected


def source_recall(expected_sources: list[str], cited_paths: list[str]) -> float | None:
    if not expected_sources:
        return None
    found = sum(1 for e in expected_sources if any(source_matches(e, p) for p in cited_paths))
    return found / len(expected_sources)


def citation_precision(facts: list[str], cited_texts: list[str]) -> float | None:
    if not facts or not cited_texts:
        return None
    wanted = [normalize(f) for f in facts]
    hits = sum(1 for text in cited_texts if any(f in normalize(text) for f in wanted))
    return hits / len(cited_texts)


def exact_match(facts: list[str], answer: str) -> bool | None:
    if not facts:
        return None
    said = normalize(strip_citations(answer))
    return any(normalize(f) == said for f in facts)


def contains(facts: list[str], answer: str) -> float | None:
    if not facts:
        return None
    said = normalize(strip_citations(answer))
    return sum(1 for f in facts if normalize(f) in said) / len(facts)


def score(record: dict[str, Any]) -> dict[str, Any]:
    """The metrics of one answer record (which carries expected_sources / expected_facts)."""
    sources = record.get("sources") or []
    facts = record.get("expected_facts") or []
    answer = record.get("answer") or ""
    row = {"id": record.get("id"), "question": record.get("question"), "cited": len(sources),
           "error": record.get("error")}
    row.update(source_recall=source_recall(record.get("expected_sources") or [], [s.get("path") for s in sources]),
               citation_precision=citation_precision(facts, [str(s.get("text") or "") for s in sources]),
               exact_match=exact_match(facts, answer), contains=contains(facts, answer))
    if record.get("error") and facts:
        row["citation_precision"] = 0.0  # a failed question counts against every metric it has
    return row


def evaluate_records(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-question metrics and their means over the questions where each one applies."""
    rows = [score(r) for r in records]
    overall: dict[str, Any] = {}
    for metric in METRICS:
        values = [float(r[metric]) for r in rows if r[metric] is not None]
        overall[metric] = round(fmean(values), 4) if values else None
        overall[f"{metric}_n"] = len(values)
    overall["errors"] = sum(1 for r in rows if r["error"])
    return {"questions": len(rows), "overall": overall, "per_question": rows,
            "random_weights": any(r.get("random_weights") for r in records)}
