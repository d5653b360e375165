"""Citations: ids in the answer are checked against the passages the model was actually given."""

from __future__ import annotations

import json

from hypothesis import given, settings, strategies as st

from feldspar.agents.citations import (
    cited_ids, number_passages, passages_for_model, resolve_citations, strip_unknown,
)

HITS = [{"path": "guide.md", "page": None, "start": 10, "end": 60, "heading": "Install", "score": 0.9, "text": "Run make demo."},
        {"path": "manual.pdf", "page": 3, "start": 0, "end": 40, "heading": None, "score": 0.5, "text": "Warranty: two years."}]


def test_passages_get_thread_unique_ids_and_keep_their_spans():
    numbered = number_passages(HITS, first_id=7)
    assert list(numbered) == ["7", "8"]
    assert numbered["8"] == {"doc_id": 8, **HITS[1]}


def test_the_model_sees_one_json_line_per_passage_with_its_id():
    lines = [json.loads(line) for line in passages_for_model(number_passages(HITS, 1)).splitlines()]
    assert lines == [{"doc_id": 1, "title": "guide.md", "text": "Run make demo."},
                     {"doc_id": 2, "title": "manual.pdf (page 3)", "text": "Warranty: two years."}]
    assert passages_for_model({}) == "No passages matched the query."


def test_citation_forms_are_recognised_in_order():
    assert cited_ids("Use make [2]. Also [1, 3] and [doc 4], [doc_id: 5]; not [x] or (6).") == ["2", "1", "3", "4", "5"]


def test_unknown_ids_are_dropped_and_reported():
    passages = number_passages(HITS, 1)
    sources, unknown = resolve_citations("Two years [2][9], install with make [1].", passages)
    assert [s["doc_id"] for s in sources] == [2, 1] and unknown == ["9"]
    assert strip_unknown("Two years [2][9].", unknown) == "Two years [2]."


@given(st.text())
def test_citation_parsing_never_raises(text):
    sources, unknown = resolve_citations(text, number_passages(HITS, 1))
    assert set(unknown).isdisjoint({"1", "2"}) and all(s["doc_id"] in (1, 2) for s in sources)


def test_grouped_citations_lose_their_unknown_ids_like_single_ones():
    unknown = ["99"]
    assert strip_unknown("Two years [1, 99] here.", unknown) == "Two years [1] here."
    assert strip_unknown("Two years [99, 1].", unknown) == "Two years [1]."
    assert strip_unknown("Two years [1; 99] here.", unknown) == "Two years [1] here."
    assert strip_unknown("Two years [99] here [doc 99].", unknown) == "Two years here."
    assert strip_unknown("[99] Starts a line.\nEnds one [99]\nok", unknown) == "Starts a line.\nEnds one\nok"


MARKED = st.lists(st.tuples(st.sampled_from(["Text", "more words", ".", ""]),
                            st.lists(st.sampled_from(["1", "2", "77", "99"]), min_size=1, max_size=3),
                            st.sampled_from([", ", "; ", ","])), max_size=5)


@settings(max_examples=60, derandomize=True)
@given(MARKED)
def test_property_no_unknown_id_survives_and_no_doubled_space_appears(parts):
    text = " ".join(f"{words} [{sep.join(ids)}]" for words, ids, sep in parts)
    _sources, unknown = resolve_citations(text, number_passages(HITS, 1))
    stripped = strip_unknown(text, unknown)
    assert set(cited_ids(stripped)) <= {"1", "2"}
    assert "  " not in stripped or "  " in text
