"""The chat page's data and view helpers, without Streamlit running."""

from __future__ import annotations

from types import SimpleNamespace

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage


def test_highlighted_passage_escapes_document_markup():
    from feldspar.ui.views_chat import highlighted

    html = highlighted("<script>x</script>", "the <b>span</b>", "after")
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert '<mark style="background:#ffe58a">the &lt;b&gt;span&lt;/b&gt;</mark>' in html


def test_source_title_names_file_path_page_span_heading_score():
    from feldspar.ui.views_chat import source_title

    title = source_title({"doc_id": 3, "path": "manuals/router.pdf", "page": 2, "start": 120, "end": 480,
                          "heading": "Reset", "score": 0.0312})
    assert title == "[3] manuals/router.pdf · p. 2 · chars 120–480 · Reset · score 0.031"  # the file named once


def test_citations_link_to_their_cards_and_unknown_ids_stay_plain():
    from feldspar.ui.views_chat import linked_citations

    linked = linked_citations("Hold it [1]; see [1, 2] and [9].", 3, {"1", "2"})
    assert linked == "Hold it [[1](#src-t3-1)]; see [[1](#src-t3-1), [2](#src-t3-2)] and [9]."


def test_thread_titles_are_cut_on_a_word():
    from feldspar.ui.views_chat import short_title, thread_label

    assert short_title("a" * 50) == "a" * 39 + "…"
    assert short_title("short title") == "short title"
    label = thread_label({"title": "x", "turns": 1, "updated": "2026-12-01T22:05:00+00:00", "collection": "docs"})
    assert label == "x · 1 Dec 22:05 · 1 turn · docs"


def test_budget_levels():
    from feldspar.webui.chat import budget_before

    assert budget_before(100, 1000, 100, 200, 0.5)["level"] == "ok"
    assert budget_before(600, 1000, 100, 0, 0.5)["level"] == "compact"
    assert budget_before(600, 1000, 100, 300, 0.5)["level"] == "near"
    over = budget_before(950, 1000, 100, 0, 0.5)
    assert over["level"] == "over" and "1,000-token context window" in over["message"]


def test_turns_of_rebuilds_each_answer_from_the_agent_state():
    from feldspar.webui.chat import turns_of

    call = {"name": "search_documents", "args": {"query": "q"}, "id": "c1"}
    values = {
        "messages": [HumanMessage("first?"), AIMessage("", tool_calls=[call]), ToolMessage("p", tool_call_id="c1"),
                     AIMessage("One [1] and [9]."), HumanMessage("second?")],
        "passages": {"1": {"doc_id": 1, "path": "a.md", "start": 0, "end": 5, "text": "hello"}},
        "trace": [{"turn": 1, "node": "model", "prompt_tokens": 90, "reused_tokens": 0, "computed_tokens": 90,
                   "completion_tokens": 10, "decode_s": 0.5, "ttft_s": 0.1},
                  {"turn": 1, "node": "finalize", "stop_reason": "answered", "cited": [1], "unknown_ids": ["9"]},
                  {"turn": 2, "node": "retrieve", "query": "second?", "hits": []}],
    }
    first, second = turns_of(values, window=1000)
    assert first["answer"] == "One [1] and." and first["unknown_citations"] == ["9"]
    assert [s["path"] for s in first["sources"]] == ["a.md"]
    assert first["usage"]["tokens_per_s"] == 20.0 and first["usage"]["window_share"] == 0.1
    assert second == {**second, "question": "second?", "finished": False, "answer": None}


def test_model_kind_reads_the_checkpoint_config():
    from feldspar.webui.models import model_kind

    assert model_kind(SimpleNamespace(layer_types=["linear_attention", "full_attention"], num_local_experts=4)) == "moe-hybrid"
    assert model_kind(SimpleNamespace(layer_types=["mamba", "attention"], num_local_experts=0)) == "hybrid"
    assert model_kind(SimpleNamespace(layer_types=["full_attention"], num_local_experts=0)) == "dense"


def test_final_step_names_dropped_ids_only_when_there_are_some():
    from feldspar.agents.trace import describe

    plain = describe({"node": "finalize", "stop_reason": "answered", "cited": [1]})
    assert plain.endswith("stop: answered; cited [1]") and "unknown" not in plain
    dropped = describe({"node": "finalize", "stop_reason": "answered", "cited": [1], "unknown_ids": [7]})
    assert dropped.endswith("stop: answered; cited [1]; dropped unknown ids 7")


def test_unknown_sizes_are_a_dash_not_minus_one_bytes():
    from feldspar.ui.views_documents import human_bytes

    assert human_bytes(-1) == "–" and human_bytes(None) == "–" and human_bytes(0) == "0 B"
    assert human_bytes(1536) == "1.5 KiB"
