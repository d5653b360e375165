"""The Python API (`feldspar.Feldspar`): ask, stream, batch, ingest, search, the graph and the chat model.

Runs on a scripted Granite chat model over the real composition root, graph, tools,
thread store and (for citations) a real ingested collection.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.agents.agent_helpers import GUIDE, SAVE_NOTE_TOOLS

NOTES = "# Minerals\n\nQuartz has a Mohs hardness of seven; feldspar has six.\n"


def scripted(replies):
    from feldspar.agents.chat_model import ChatGranite
    from feldspar.agents.scripted import ScriptedBackend

    return ChatGranite(backend=ScriptedBackend(replies))


def cite_passage_with(fact: str):
    """A scripted reply citing the passage (given in the request's tool response) that holds ``fact``."""
    def reply(request: dict) -> str:
        for message in request["messages"]:
            if message["role"] != "tool":
                continue
            for line in message["content"].splitlines():
                passage = json.loads(line) if line.startswith("{") else {}
                if fact in passage.get("text", ""):
                    return f"Hold it for {fact} [{passage['doc_id']}]."
        return "I could not find it."

    return reply


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """A data home with a small ingested collection "docs" (through the API)."""
    from feldspar import Feldspar

    home = tmp_path_factory.mktemp("api-home")
    folder = tmp_path_factory.mktemp("api-docs")
    (folder / "guide.md").write_text(GUIDE, encoding="utf-8")
    (folder / "notes.md").write_text(NOTES, encoding="utf-8")
    with Feldspar(home=home, collection="docs", parse_timeout_s=600) as fs:
        summary = fs.ingest(folder)
    assert summary.indexed == 2, summary
    return home


def test_feldspar_is_exported_lazily_and_checks_its_settings(tmp_path):
    import feldspar
    from feldspar import Answer, Feldspar, SettingsError, load_settings

    assert "Feldspar" in dir(feldspar) and feldspar.Feldspar is Feldspar and Answer.__module__ == "feldspar.api"
    fs = Feldspar(home=tmp_path, collection="manuals", max_new_tokens=64)
    assert fs.settings.collection == "manuals" and fs.settings.max_new_tokens == 64 and fs.settings.home == tmp_path
    base = load_settings(home=tmp_path, seed=3)
    assert Feldspar(base, top_p=0.5).settings.seed == 3 and Feldspar(base).settings is base
    with pytest.raises(SettingsError, match="max_new_tokens"):
        Feldspar(home=tmp_path, max_new_tokens=-1)


def test_ask_stream_and_threads_on_the_scripted_model(tmp_path):
    from feldspar import Answer, Feldspar
    from feldspar.agents.runner import AgentEvent

    call = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "2340 * 0.17"}}\n</tool_call>'
    model = scripted([call, "It is 397.8.", "Twice that is 795.6."])
    fs = Feldspar(home=tmp_path, chat_model=model, policy="none")
    answer = fs.ask("What is 17% of 2,340?")
    assert isinstance(answer, Answer) and answer.text == "It is 397.8." and not answer.random_weights
    assert [step["node"] for step in answer.trace] == ["model", "tool", "model", "finalize"]
    assert answer.usage["model_calls"] == 2 and answer.usage["reused_tokens"] > 0 and answer.stop_reason == "answered"
    events = list(fs.stream("And twice that?", thread=answer.thread_id))
    assert all(isinstance(e, AgentEvent) and e.thread_id == answer.thread_id for e in events)
    kinds = [e.kind for e in events]
    assert "token" in kinds and "model" in kinds and kinds.count("answer") == 1
    assert "".join(e.text for e in events if e.kind == "token") == "Twice that is 795.6."
    assert fs.chat_model is model and fs.agent.deps.chat_model is model
    assert {"begin", "model", "tool", "finalize"} <= set(fs.graph.get_graph().nodes)
    second = model.backend.requests[-1]["messages"]
    assert any(m["role"] == "user" and "17%" in m["content"] for m in second)  # the thread was continued


def test_ingest_search_and_cited_answers(library):
    from feldspar import Feldspar

    fs = Feldspar(home=library, collection="docs", chat_model=scripted([cite_passage_with("ten seconds")]))
    hits = fs.search("how to reset the router", k=3)
    assert hits and hits[0]["path"].endswith("guide.md") and "ten seconds" in hits[0]["text"]
    answer = fs.ask("How do I reset the router?")
    assert answer.sources and answer.sources[0]["path"].endswith("guide.md")
    assert "ten seconds" in answer.sources[0]["text"] and answer.trace[0]["node"] == "retrieve"


def test_batch_from_python_resumes_and_scores_answers(library, tmp_path):
    from feldspar import Feldspar
    from feldspar.agents.answer_eval import evaluate_records, require_expectations
    from feldspar.agents.batch import parse_lines, run_batch

    model = scripted([cite_passage_with("ten seconds")] * 8)
    fs = Feldspar(home=library, collection="docs", chat_model=model)
    out = tmp_path / "answers.jsonl"
    result = fs.batch(["How do I reset the router?", {"id": "w", "question": "Warranty?"}, {"oops": 1}], out=out)
    assert [r["id"] for r in result.records] == ["1", "w"] and [b.line for b in result.bad_lines] == [3]
    assert result.summary.answered == 2 and result.summary.reused_tokens > 0
    again = fs.batch(["How do I reset the router?", {"id": "w", "question": "Warranty?"}], out=out)
    assert again.summary.skipped == 2 and not again.records and len(out.read_text().splitlines()) == 2

    lines = ['{"id": "r", "question": "How do I reset it?", "expected_sources": ["guide.md"], '
             '"expected_facts": ["ten seconds"]}',
             '{"id": "m", "question": "Hardness of quartz?", "expected_sources": ["notes.md"], '
             '"expected_facts": ["seven"]}']
    items, _ = parse_lines(lines, extra_keys=("expected_sources", "expected_facts"))
    items, _ = require_expectations(items)
    records, _ = run_batch(items, fs.agents, lambda record: None)
    report = evaluate_records(records)
    by_id = {row["id"]: row for row in report["per_question"]}
    assert by_id["r"]["source_recall"] == 1.0 and by_id["r"]["citation_precision"] == 1.0
    assert by_id["r"]["contains"] == 1.0 and by_id["r"]["exact_match"] is False
    # the scripted reply cites the reset passage whatever the question: wrong file, no expected fact in it
    assert by_id["m"]["cited"] == 1 and by_id["m"]["source_recall"] == 0.0
    assert by_id["m"]["citation_precision"] == 0.0 and by_id["m"]["contains"] == 0.0
    assert report["overall"]["source_recall"] == 0.5


def test_the_api_on_a_scripted_model_loads_no_torch(tmp_path):
    code = ("import sys\nfrom feldspar import Feldspar\nfrom feldspar.agents.chat_model import ChatGranite\n"
            "from feldspar.agents.scripted import ScriptedBackend\n"
            "fs = Feldspar(chat_model=ChatGranite(backend=ScriptedBackend(['hello'])), policy='none')\n"
            "print(fs.ask('hi?').text, 'torch' in sys.modules, 'chromadb' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).parent)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["hello", "False", "False"]


def test_ask_on_the_tiny_checkpoint_is_labelled_random(tiny_checkpoint, tmp_path):
    from feldspar import Feldspar

    fs = Feldspar(home=tmp_path, model=str(tiny_checkpoint), policy="none", max_new_tokens=4)
    answer = fs.ask("Hello?")
    assert answer.random_weights and answer.usage["prompt_tokens"] > 0
    assert fs.chat_model.backend.random_weights and fs.agents.max_workers() == 1


def test_batch_lines_choose_their_collection(library):
    from feldspar import Feldspar

    fs = Feldspar(home=library, collection="elsewhere", chat_model=scripted([cite_passage_with("ten seconds")] * 4))
    result = fs.batch([{"id": "ok", "question": "How do I reset the router?", "collection": "docs"},
                       {"id": "missing", "question": "How do I reset the router?", "collection": "nope"}])
    by_id = {r["id"]: r for r in result.records}
    assert by_id["ok"]["error"] is None and by_id["ok"]["sources"][0]["path"].endswith("guide.md")
    assert by_id["ok"]["collection"] == "docs" and by_id["missing"]["error"].startswith("no collection 'nope'")
    assert result.summary.answered == 1 and result.summary.failed == 1


def test_summarize_and_extract_run_on_the_api_objects_chat_model(tmp_path):
    from feldspar import Feldspar

    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "guide.md").write_text(GUIDE, encoding="utf-8")
    model = scripted(["The router resets with a ten-second press [1].",
                      '{"product": "router"', '{"product": "router", "warranty_years": 2}'])
    fs = Feldspar(home=tmp_path / "home", chat_model=model)
    report = fs.summarize(paths=[folder], out=tmp_path / "summary.md", mode="long-context")
    assert report["mode"] == "long-context" and report["files_total"] == 1
    assert "ten-second press" in (tmp_path / "summary.md").read_text(encoding="utf-8")
    schema = {"type": "object", "required": ["product", "warranty_years"],
              "properties": {"product": {"type": "string"}, "warranty_years": {"type": "integer"}}}
    rows = fs.extract(schema, [folder / "guide.md"], tmp_path / "rows.jsonl")
    assert rows["valid"] == 1 and rows["model_calls"] == 2  # the cut-off JSON went back once with its error
    row = json.loads((tmp_path / "rows.jsonl").read_text(encoding="utf-8"))
    assert row["data"] == {"product": "router", "warranty_years": 2} and row["path"].endswith("guide.md")
    assert len(model.backend.requests) == 3  # every call went to the object's own chat model


@pytest.mark.parametrize("decision", [True, False])
def test_an_approve_callback_is_asked_and_decides(tmp_path, decision):
    from feldspar import Feldspar

    (tmp_path / "tools.py").write_text(SAVE_NOTE_TOOLS, encoding="utf-8")
    call = '<tool_call>\n{"name": "save_note", "arguments": {"text": "buy milk"}}\n</tool_call>'
    fs = Feldspar(home=tmp_path / "home", chat_model=scripted([call, "Done."]), policy="none",
                  tools_module=tmp_path / "tools.py")
    asked = []
    answer = fs.ask("Note: buy milk", approve=lambda request: asked.append(request) or decision)
    assert [r["tool"] for r in asked] == ["save_note"] and asked[0]["args"] == {"text": "buy milk"}
    assert answer.text == "Done." and (tmp_path / "notes.txt").exists() is decision


def test_without_a_callback_a_side_effecting_call_is_refused(tmp_path):
    from feldspar import Feldspar

    (tmp_path / "tools.py").write_text(SAVE_NOTE_TOOLS, encoding="utf-8")
    call = '<tool_call>\n{"name": "save_note", "arguments": {"text": "x"}}\n</tool_call>'
    fs = Feldspar(home=tmp_path / "home", chat_model=scripted([call, "Not saved."]), policy="none",
                  tools_module=tmp_path / "tools.py")
    assert fs.ask("Note: x").text == "Not saved." and not (tmp_path / "notes.txt").exists()
    never = Feldspar(home=tmp_path / "home2", chat_model=scripted([call, "No."]), policy="none", approve="never",
                     tools_module=tmp_path / "tools.py")
    assert never.ask("Note: x", approve=lambda request: pytest.fail("approve='never' asks nobody")).text == "No."
