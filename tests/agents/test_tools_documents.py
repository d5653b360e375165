"""search_documents and read_document over a real ingested collection; read never leaves it.

One small collection (markdown, code, a two-page PDF) is ingested once per module by the
real RetrievalService; a sibling folder holds a secret file that no read may return,
whether asked by relative path, absolute path, symlink (made before or after ingest) or
as a file of another collection.
"""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feldspar.agents.builtin_tools import MAX_READ_CHARS, read_document_tool, search_documents_tool
from feldspar.agents.tools import run_tool
from feldspar.compose import build_retrieval, build_tools
from feldspar.settings import load_settings

from tests.retrieval.retrieval_helpers import pdf_bytes

SECRET = "TOP SECRET launch codes"
GUIDE = """# Feldspar guide

## Install

Feldspar installs with pip. Granite models run on the CPU or a GPU.

## Minerals

Feldspar minerals make up much of the crust of the Earth. Orthoclase and plagioclase are feldspars.
""" + "\n".join(f"Line {n} of the appendix about quartz and mica." for n in range(200))
CODE = '''def hybrid_search(query):
    """Fuse BM25 and vector rankings by reciprocal rank fusion."""
    return sorted(query)
'''


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    base = tmp_path_factory.mktemp("documents")
    root, outside = base / "corpus", base / "outside"
    (root / "code").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.md").write_text(f"# Secret\n\n{SECRET}\n")
    (root / "guide.md").write_text(GUIDE)
    (root / "code" / "search.py").write_text(CODE)
    (root / "report.pdf").write_bytes(pdf_bytes(["Quarterly revenue grew in the north", "Risks include supply of quartz"]))
    (root / "swapped.md").write_text("# Swapped\n\nThis file is replaced by a link after ingest.\n")
    (root / "changing.md").write_text("# Changing\n\nThe first version of this file.\n")
    (root / "notes.bin").write_bytes(b"\x00\x01binary")
    os.symlink(outside / "secret.md", root / "link_out.md")
    os.symlink(outside, root / "linkdir")
    service = build_retrieval(load_settings(home=base / "home"))
    summary = service.ingest([root], collection="default")
    assert summary.counts()["indexed"] == 5
    service.ingest([outside], collection="other")
    (root / "swapped.md").unlink()
    os.symlink(outside / "secret.md", root / "swapped.md")
    (root / "late.md").write_text(f"# Late\n\nWritten after ingest. {SECRET}\n")
    yield service, root, outside
    service.close()


@pytest.fixture(scope="module")
def tools(collection):
    service, _, _ = collection
    search = search_documents_tool(lambda query, k: [hit.to_dict() for hit in service.search(query, k)], k=8)
    return search, read_document_tool(service.read_span)


def read(tools, **args):
    return run_tool(tools[1], args)


def test_search_returns_citable_passages_whose_spans_read_back_exactly(tools):
    found = run_tool(tools[0], {"query": "feldspar minerals plagioclase"}).value
    assert found["query"] == "feldspar minerals plagioclase"
    passages = found["passages"]
    assert passages and passages[0]["path"] == "guide.md"
    assert passages[0]["heading"] == "Feldspar guide > Minerals"
    for passage in passages:
        span = read(tools, path=passage["path"], start=passage["start"], end=passage["end"]).value
        assert span["text"] == passage["text"]
    assert [p["doc_id"] for p in passages] == list(range(1, len(passages) + 1))  # cited as a new thread would


def test_pdf_passages_map_to_their_page(tools):
    passages = run_tool(tools[0], {"query": "supply of quartz risks"}).value["passages"]
    page_two = next(p for p in passages if p["path"] == "report.pdf" and "Risks" in p["text"])
    assert page_two["page"] == 2
    span = read(tools, path="report.pdf", start=page_two["start"], end=page_two["end"]).value
    assert (span["text"], span["page"], span["pages"]) == (page_two["text"], 2, [2])


def test_code_files_read_back_verbatim(tools):
    span = read(tools, path="code/search.py").value
    assert span["text"] == CODE
    assert (span["start"], span["end"], span["total_chars"]) == (0, len(CODE), len(CODE))
    assert "next_start" not in span


def test_a_long_file_is_served_in_bounded_pieces_that_say_where_to_go_on(tools):
    first = read(tools, path="guide.md").value
    assert len(first["text"]) == MAX_READ_CHARS and first["next_start"] == MAX_READ_CHARS
    second = read(tools, path="guide.md", start=first["next_start"]).value
    assert first["text"] + second["text"] == GUIDE[: len(first["text"]) + len(second["text"])]


def test_a_file_changed_since_ingest_is_served_and_flagged(collection, tools):
    _, root, _ = collection
    assert read(tools, path="changing.md").value["changed_since_indexed"] is False
    (root / "changing.md").write_text("# Changing\n\nThe second, longer version of this file.\n")
    assert read(tools, path="changing.md").value["changed_since_indexed"] is True


def test_an_absolute_path_inside_the_collection_works(collection, tools):
    _, root, _ = collection
    assert read(tools, path=str(root / "code" / "search.py")).value["path"] == "code/search.py"


@pytest.mark.parametrize("path", [
    "../outside/secret.md", "guide.md/../../outside/secret.md", "code/../../outside/secret.md",
    "..\\outside\\secret.md", "%2e%2e/outside/secret.md", "~/../outside/secret.md", "/etc/passwd",
    "file:///etc/passwd", "link_out.md", "linkdir/secret.md", "swapped.md", "late.md", "notes.bin", "secret.md",
    "code", ".", "./", "guide.md\x00../../outside/secret.md", "GUIDE.MD", " " * 3,
    "{outside}/secret.md", "{root}/../outside/secret.md", "{root}/link_out.md", "{root}/late.md", "{root}",
])
def test_read_document_refuses_every_path_outside_the_collection(collection, tools, path):
    _, root, outside = collection
    outcome = read(tools, path=path.replace("{root}", str(root)).replace("{outside}", str(outside)))
    assert outcome.error is not None and outcome.result is None
    assert SECRET not in outcome.error


def test_refusals_say_why_and_suggest_real_files(tools):
    assert read(tools, path="guide").error == "'guide' is not a file of collection 'default'; did you mean 'guide.md'?"
    assert "path leaves the ingested root" in read(tools, path="swapped.md").error
    assert "start 999999 is past the end of 'code/search.py'" in read(tools, path="code/search.py", start=999999).error
    assert read(tools, path="guide.md", start=5, end=5).error.endswith("end must be greater than start")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["", "../", "/", "./", "code/", "linkdir/", "~/"]).flatmap(
    lambda prefix: st.text(max_size=40).map(lambda rest: prefix + rest)),
    start=st.none() | st.integers(-5, 10**7), end=st.none() | st.integers(-5, 10**7))
def test_fuzzed_reads_never_raise_and_only_serve_collection_files(collection, tools, path, start, end):
    outcome = read(tools, path=path, start=start, end=end)
    assert (outcome.result is None) != (outcome.error is None)
    assert SECRET not in (outcome.result or "") + (outcome.error or "")
    if outcome.error is None:
        assert outcome.value["path"] in {"guide.md", "code/search.py", "report.pdf", "changing.md"}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=st.text(max_size=60) | st.integers())
def test_fuzzed_searches_never_raise(tools, query):
    outcome = run_tool(tools[0], {"query": query})
    assert (outcome.result is None) != (outcome.error is None)


def test_search_in_a_collection_that_does_not_exist_is_an_error_outcome(collection):
    service, _, _ = collection
    search = search_documents_tool(lambda query, k: [h.to_dict() for h in service.search(query, k, collection="nope")])
    outcome = run_tool(search, {"query": "feldspar"})
    assert outcome.error is not None and "nope" in outcome.error


def test_the_agent_offers_the_search_documents_the_tools_command_runs(collection, tools):
    from feldspar.agents.chat_model import ChatGranite
    from feldspar.agents.nodes import AgentDeps, Nodes
    from feldspar.agents.scripted import ScriptedBackend

    service, _, _ = collection
    search = lambda query, k: [h.to_dict() for h in service.search(query, k)]  # noqa: E731
    nodes = Nodes(AgentDeps(chat_model=ChatGranite(backend=ScriptedBackend([])), search=search))
    assert nodes.tool_schemas() == [tools[0].openai_schema()]  # one schema: name, description, parameters
    passages, text, _ = nodes.search({}, "supply of quartz risks", mode="tool call")
    ran = run_tool(tools[0], {"query": "supply of quartz risks"}).value["passages"][:4]  # its k is 8, the graph's 4
    assert [(p["doc_id"], p["path"], p["text"]) for p in passages.values()] == [(p["doc_id"], p["path"], p["text"])
                                                                              for p in ran]
    assert [json.loads(line)["doc_id"] for line in text.splitlines()] == [1, 2, 3, 4]  # what the model reads


def test_build_tools_offers_search_and_read_only_with_a_retrieval_service(collection):
    service, _, _ = collection
    settings_ = load_settings()
    assert [t.name for t in build_tools(settings_)] == ["calculator", "current_time"]
    with_docs = build_tools(settings_, retrieval=service)
    assert [t.name for t in with_docs] == ["search_documents", "read_document", "calculator", "current_time"]
    assert run_tool(with_docs[1], {"path": "code/search.py"}).value["text"] == CODE
