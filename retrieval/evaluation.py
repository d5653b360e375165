"""Retrieval evaluation: recall@1/5/10, MRR and nDCG@10 over a JSONL file of questions.

Each line is ``{"question": "...", "path": "expected/relative/path.md"}`` with an
optional ``"page"`` (other keys, such as the ``grep`` that checks a dev set's answer, are
ignored); a hit counts when a result has that path (and page, if given). Each question
has one relevant document, so nDCG@10 is ``1 / log2(1 + rank)`` of the first relevant hit
within the top 10 (0 beyond). ``compare`` puts two reports side by side.
This module does not know how search works beyond calling the function it is given.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from feldspar.retrieval.errors import InvalidQuestions
from feldspar.retrieval.search import SearchHit

CUTOFFS = (1, 5, 10)
METRICS = ("recall@1", "recall@5", "recall@10", "mrr", "ndcg@10")


@dataclass(frozen=True)
class Question:
    question: str
    path: str
    page: int | None = None


def load_questions(path: Path) -> list[Question]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidQuestions(f"cannot read questions file {path}: {exc}") from None
    questions = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            questions.append(Question(str(item["question"]), str(item["path"]), item.get("page")))
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidQuestions(f"{path}:{number}: expected a JSON object with question and path ({exc})") from None
    if not questions:
        raise InvalidQuestions(f"{path} contains no questions")
    return questions


def first_relevant_rank(hits: list[SearchHit], question: Question) -> int | None:
    for rank, hit in enumerate(hits, start=1):
        if hit.path == question.path and (question.page is None or hit.page == question.page):
            return rank
    return None


def evaluate(questions: list[Question], search: Callable[[str, int], list[SearchHit]]) -> dict:
    """Recall at each cutoff, MRR, and the rank of the first relevant hit per question."""
    depth = max(CUTOFFS)
    ranks = [first_relevant_rank(search(q.question, depth), q) for q in questions]
    n = len(questions)
    report = {f"recall@{c}": round(sum(1 for r in ranks if r and r <= c) / n, 4) for c in CUTOFFS}
    report["mrr"] = round(sum(1.0 / r for r in ranks if r) / n, 4)
    report["ndcg@10"] = round(sum(1.0 / math.log2(1 + r) for r in ranks if r and r <= depth) / n, 4)
    report["questions"] = n
    report["ranks"] = [{"question": q.question, "path": q.path, "rank": r} for q, r in zip(questions, ranks)]
    return report


def misses(report: dict, cutoff: int = 1) -> list[dict]:
    """The questions whose first relevant hit is not within ``cutoff`` (rank None: not in the top 10)."""
    return [row for row in report["ranks"] if row["rank"] is None or row["rank"] > cutoff]


def compare(left: dict, right: dict) -> dict:
    """Metrics of two reports over the same questions, their differences, and the questions that moved."""
    metrics = [{"metric": m, "left": left[m], "right": right[m], "change": round(right[m] - left[m], 4)}
               for m in METRICS]
    moved = [{"question": a["question"], "path": a["path"], "left": a["rank"], "right": b["rank"]}
             for a, b in zip(left["ranks"], right["ranks"]) if a["rank"] != b["rank"]]
    return {"questions": left["questions"], "metrics": metrics, "moved": moved}
