"""Answer metrics (agents/answer_eval.py): source recall, citation precision, exact/contains matches."""

from __future__ import annotations

import pytest

from feldspar.agents.answer_eval import (
    citation_precision, contains, evaluate_records, exact_match, normalize, require_expectations, score,
    source_matches, source_recall,
)
from feldspar.agents.batch import BatchItem, parse_lines


def source(path: str, text: str = "") -> dict:
    return {"doc_id": path[:3], "path": path, "text": text}


def test_normalize_ignores_case_punctuation_and_spacing():
    assert normalize("  Ten   SECONDS, amber!  ") == "ten seconds amber"


@pytest.mark.parametrize(("expected", "path", "matches"), [
    ("guide.md", "guide.md", True),
    ("guide.md", "docs/manuals/guide.md", True),
    ("manuals/guide.md", "docs/manuals/guide.md", True),
    ("guide.md", "docs/old-guide.md", False),
    ("uide.md", "docs/guide.md", False),
    ("guide.md", None, False),
])
def test_source_matches_path_tail_or_name(expected, path, matches):
    assert source_matches(expected, path) is matches


def test_source_recall_counts_expected_sources_among_cited_ones():
    assert source_recall(["guide.md", "manual.pdf"], ["a/guide.md", "a/guide.md", "b/other.txt"]) == 0.5
    assert source_recall(["guide.md"], []) == 0.0
    assert source_recall([], ["a/guide.md"]) is None


def test_citation_precision_is_the_share_of_cited_passages_holding_a_fact():
    texts = ["Hold the button for ten seconds.", "The warranty lasts two years.", "TEN  seconds, then amber"]
    assert citation_precision(["ten seconds"], texts) == pytest.approx(2 / 3)
    assert citation_precision(["ten seconds", "two years"], texts) == 1.0
    assert citation_precision(["ten seconds"], []) is None
    assert citation_precision([], texts) is None


def test_exact_match_ignores_citation_markers_and_punctuation():
    assert exact_match(["ten seconds"], "Ten seconds. [a1b2c3]") is True
    assert exact_match(["ten seconds"], "Hold it for ten seconds.") is False
    assert exact_match([], "anything") is None


def test_contains_is_the_share_of_facts_in_the_answer():
    answer = "Hold the button for ten seconds [d1]; the light blinks amber."
    assert contains(["ten seconds", "amber", "two years"], answer) == pytest.approx(2 / 3)
    assert contains(["blinks amber"], answer) == 1.0
    assert contains(["d1"], answer) == 0.0  # citation markers are not facts the answer states


def test_score_and_overall_means_skip_metrics_that_do_not_apply():
    records = [
        {"id": "1", "question": "reset?", "answer": "Ten seconds.", "expected_facts": ["ten seconds"],
         "expected_sources": ["guide.md"], "sources": [source("c/guide.md", "hold for ten seconds")]},
        {"id": "2", "question": "pdf?", "answer": "No idea.", "expected_sources": ["manual.pdf"],
         "sources": [source("c/guide.md", "x")]},
    ]
    report = evaluate_records(records)
    first, second = report["per_question"]
    assert (first["source_recall"], first["citation_precision"], first["exact_match"], first["contains"]) == (
        1.0, 1.0, True, 1.0)
    assert second["source_recall"] == 0.0 and second["citation_precision"] is None and second["exact_match"] is None
    overall = report["overall"]
    assert overall["source_recall"] == 0.5 and overall["source_recall_n"] == 2
    assert overall["citation_precision"] == 1.0 and overall["citation_precision_n"] == 1
    assert overall["exact_match"] == 1.0 and overall["errors"] == 0


def test_a_failed_question_counts_against_its_metrics():
    row = score({"id": "1", "question": "q", "answer": None, "error": "boom", "sources": [],
                 "expected_facts": ["x"], "expected_sources": ["a.md"]})
    assert (row["source_recall"], row["citation_precision"], row["exact_match"], row["contains"]) == (
        0.0, 0.0, False, 0.0)
    assert evaluate_records([{"id": "1", "question": "q", "error": "boom", "expected_facts": ["x"]}])[
        "overall"]["errors"] == 1


def test_require_expectations_reports_lines_without_usable_expectations():
    items, bad = parse_lines([
        '{"id": "1", "question": "a", "expected_facts": "ten seconds"}',
        '{"id": "2", "question": "b"}',
        '{"id": "3", "question": "c", "expected_sources": [3]}',
        '{"id": "4", "question": "d", "expected_sources": ["guide.md"], "expected_facts": []}',
    ], extra_keys=("expected_sources", "expected_facts"))
    good, unusable = require_expectations(items)
    assert [i.id for i in good] == ["1", "4"]
    assert good[0].extra == {"expected_sources": [], "expected_facts": ["ten seconds"]}
    assert [(b.line, "expected" in b.reason) for b in unusable] == [(2, True), (3, True)]
    assert isinstance(good[1], BatchItem) and not bad
