"""`summarize` end to end on the scripted Granite model: real files (markdown, code, PDF) read by the
retrieval loaders, map and reduce prompts, citations back to files, the per-file cache, hierarchical
reduce under a small window, map over chunks of a big file, and the long-context mode."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.agents.agent_helpers import scripted_model

from feldspar.agents.errors import AgentError
from feldspar.settings import load_settings
from feldspar.workflows import summarize

MAP = re.compile(r"Summarise (?:part (\d+) of (\d+) of )?the document '([^']+)'")


def last_user(request) -> str:
    return next(m["content"] for m in reversed(request["messages"]) if m["role"] == "user")


def reply(request) -> str:
    """A summary naming what it summarised; merges cite every file number they were given."""
    text = last_user(request)
    found = MAP.match(text)
    if found:
        part = f" part {found.group(1)}" if found.group(1) else ""
        return f"About {found.group(3)}{part}."
    if text.startswith("Summarise the documents you were given"):
        return "Reset and hardness [1] [3], and a made-up one [99]."
    if text.startswith("Below are summaries of consecutive parts"):
        return "Whole file: " + " ".join(re.findall(r"About \S+ part \d+", text)) + "."
    numbers = sorted({int(n) for group in re.findall(r"\[([\d,]+)\]", text) for n in group.split(",")})
    cites = "[" + ",".join(str(n) for n in numbers) + "]" if numbers else ""
    if "Merge them into one shorter summary" in text:
        return f"Merged {cites}."
    return f"Overall {cites} and a made-up one [99]."


def model(window: int = 8192, count: int = 400):
    return scripted_model([reply] * count, context_window=window)


@pytest.fixture
def files(corpus, tmp_path) -> Path:
    folder = tmp_path / "files"
    shutil.copytree(corpus, folder)
    return folder


@pytest.fixture
def settings(tmp_path):
    return load_settings(home=tmp_path / "home")


def map_requests(backend):
    return [r for r in backend.requests if MAP.match(last_user(r))]


def test_map_and_reduce_prompts_and_citations_back_to_files(files, settings, tmp_path):
    chat = model()
    out = tmp_path / "summary.md"
    report = summarize(settings, paths=[files], out=out, chat_model=chat, mode="map-reduce", summary_tokens=64)
    backend = chat.backend
    names = sorted(p.name for p in files.iterdir())
    assert report["mode"] == "map-reduce" and report["computed"] == 3 and report["cached"] == 0
    mapped = map_requests(backend)
    assert sorted(MAP.match(last_user(r)).group(3) for r in mapped) == names
    guide = next(r for r in mapped if "guide.md" in last_user(r))
    assert "hold the recessed button for ten seconds" in last_user(guide)
    pdf = next(r for r in mapped if "manual.pdf" in last_user(r))
    assert "uplink cable is unplugged" in last_user(pdf)  # the PDF's text, read by the retrieval loader
    final = last_user(backend.requests[-1])
    assert final.startswith("Below are summaries of 3 files")
    for number, entry in enumerate(report["files"], start=1):
        assert f"[{number}] {entry['path']}:\nAbout {Path(entry['path']).name}." in final
    assert [Path(f["path"]).name for f in report["files"]] == names
    assert report["summary"] == "Overall [1,2,3] and a made-up one."
    assert report["unknown_citations"] == ["99"] and all(f["cited"] for f in report["files"])
    text = out.read_text(encoding="utf-8")
    pdf_entry = next(f for f in report["files"] if f["path"].endswith("manual.pdf"))
    assert f"- [{pdf_entry['id']}] {pdf_entry['path']} — chars 0-" in text and "pages 1-2 (cited)" in text
    assert "_Mode: map-reduce: 3 file(s), 3 summarised, 0 from cache" in text and "[99]" not in text


def test_a_rerun_recomputes_only_the_changed_file(files, settings):
    first = summarize(settings, paths=[files], chat_model=model(), mode="map-reduce", summary_tokens=64)
    assert (first["computed"], first["cached"]) == (3, 0)
    again = model()
    second = summarize(settings, paths=[files], chat_model=again, mode="map-reduce", summary_tokens=64)
    assert (second["computed"], second["cached"]) == (0, 3) and map_requests(again.backend) == []
    assert "0 summarised, 3 from cache" in second["markdown"]
    (files / "minerals.py").write_text("def hardness(m):\n    return {'talc': 1}[m]\n", encoding="utf-8")
    changed = model()
    third = summarize(settings, paths=[files], chat_model=changed, mode="map-reduce", summary_tokens=64)
    assert (third["computed"], third["cached"]) == (1, 2)
    assert [MAP.match(last_user(r)).group(3) for r in map_requests(changed.backend)] == ["minerals.py"]
    assert "talc" in last_user(map_requests(changed.backend)[0])
    assert [f["cached"] for f in third["files"]] == [True, True, False]  # guide.md, manual.pdf, minerals.py
    no_cache = model()
    summarize(settings, paths=[files], chat_model=no_cache, mode="map-reduce", summary_tokens=64, cache=False)
    assert len(map_requests(no_cache.backend)) == 3


def test_many_files_under_a_small_window_reduce_hierarchically(settings, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for number in range(40):
        (folder / f"note{number:02d}.txt").write_text(f"Note {number} says the value is {number * 7}.\n", encoding="utf-8")
    chat = model(window=1000, count=200)
    report = summarize(settings, paths=[folder], chat_model=chat, mode="auto", summary_tokens=120)
    backend = chat.backend
    assert report["mode"] == "map-reduce" and "over 75%" in report["why"]
    assert report["reduce_levels"] >= 1 and report["computed"] == 40
    merges = [r for r in backend.requests if "Merge them into one shorter summary" in last_user(r)]
    assert len(merges) >= 2
    assert all(r["prompt_tokens"] + r["max_new_tokens"] <= 1000 for r in backend.requests)
    final = last_user(backend.requests[-1])
    assert final.startswith("Below are summaries of 40 files") and "(merged)" in final
    cited = {f["id"] for f in report["files"] if f["cited"]}
    assert cited == set(range(1, 41))  # every file's number survived the merges and maps back to it
    assert "hierarchical reduce in" in report["markdown"]


def test_a_file_over_the_window_is_summarised_over_its_chunks_with_spans(settings, tmp_path):
    big = tmp_path / "big.md"
    sections = [f"## Section {n}\n\n" + " ".join(f"Sentence {n}.{i} about feldspar." for i in range(30))
                for n in range(6)]
    big.write_text("# Big\n\n" + "\n\n".join(sections) + "\n", encoding="utf-8")
    chat = model(window=600, count=100)
    report = summarize(settings, paths=[big], chat_model=chat, mode="map-reduce", summary_tokens=48)
    parts = [r for r in chat.backend.requests if MAP.match(last_user(r)) and MAP.match(last_user(r)).group(1)]
    entry = report["files"][0]
    assert entry["chunks"] == len(parts) > 2
    assert all(f"of {len(parts)} of the document 'big.md' (chars " in last_user(r) for r in parts)
    spans = entry["spans"]
    text = big.read_text(encoding="utf-8")
    assert spans[0]["start"] <= 2 and spans[-1]["end"] == len(text.rstrip())
    assert all(a["end"] <= b["start"] + 1 for a, b in zip(spans, spans[1:]))
    assert entry["summary"].startswith("Whole file: About big.md part 1")
    assert "in {} chunks".format(len(parts)) in report["markdown"]


def test_long_context_mode_when_everything_fits(files, settings):
    chat = model(window=8192)
    made: list = []
    report = summarize(settings, paths=[files], chat_model=chat, summary_tokens=64)
    assert report["mode"] == "long-context" and "within 75%" in report["why"]
    (request,) = chat.backend.requests
    assert [m["role"] for m in request["messages"]] == ["user"]  # no system turn of ours: a pack's prefix holds
    assert [d["title"] for d in request["documents"]] == sorted(p.name for p in files.iterdir())
    assert "hold the recessed button" in request["documents"][0]["text"]
    assert report["summary"] == "Reset and hardness [1] [3], and a made-up one." and report["unknown_citations"] == ["99"]
    assert [f["cited"] for f in report["files"]] == [True, False, True]
    assert "_Mode: long-context: 3 file(s) in one call" in report["markdown"]
    from feldspar.agents.summarize import SourceText, SummaryOptions, summarize_documents

    docs = [SourceText(path="a.txt", text="Alpha [1]."), SourceText(path="b.txt", text="Bravo.")]
    direct = summarize_documents(model(), docs, SummaryOptions(summary_tokens=32), None,
                                 prepare_long_context=lambda documents: made.append(documents) or "pack-x")
    assert direct["pack"] == "pack-x" and made[0] == [d.as_document(i) for i, d in enumerate(docs, start=1)]


def test_forced_modes_and_impossible_windows(files, settings):
    chat = model(window=300)
    with pytest.raises(AgentError, match="long-context mode is impossible"):
        summarize(settings, paths=[files], chat_model=chat, mode="long-context", summary_tokens=32)
    forced = model(window=8192)
    report = summarize(settings, paths=[files], chat_model=forced, mode="map-reduce", summary_tokens=64)
    assert report["mode"] == "map-reduce" and report["why"] == "map-reduce was asked for"
    with pytest.raises(AgentError, match="leave too little"):
        summarize(settings, paths=[files], chat_model=model(window=100), summary_tokens=64)
    assert chat.backend.requests == []


def test_unreadable_files_are_reported_and_the_rest_summarised(files, settings, tmp_path):
    (files / "blob.txt").write_bytes(b"\x00\x01\x02 binary")
    report = summarize(settings, paths=[files, tmp_path / "missing.md", files / "guide.md"], chat_model=model(),
                       summary_tokens=64)
    reasons = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
    assert reasons == {"blob.txt": "binary content", "missing.md": "no such file or directory"}
    assert report["files_total"] == 3  # guide.md, named twice, is read once
    with pytest.raises(AgentError, match="no readable files"):
        summarize(settings, paths=[files / "blob.txt"], chat_model=model())


def test_a_collection_is_summarised_from_its_indexed_files(collection_service):
    settings = load_settings(home=collection_service.config.home)
    chat = model()
    report = summarize(settings, collection="docs", chat_model=chat, mode="map-reduce", summary_tokens=64,
                       cache=False)
    assert sorted(f["path"] for f in report["files"]) == ["guide.md", "manual.pdf", "minerals.py"]
    assert report["collection"] == "docs" and all(f["cited"] for f in report["files"])
    assert any("uplink cable" in last_user(r) for r in map_requests(chat.backend))
    with pytest.raises(Exception, match="nope"):
        summarize(settings, collection="nope", chat_model=model())


def test_hundreds_of_files_reduce_over_several_levels_within_the_window():
    from feldspar.agents.summarize import SourceText, SummaryOptions, summarize_documents

    def wordy(request) -> str:
        text = last_user(request)
        if "Merge them into one shorter summary" in text:
            numbers = sorted({int(n) for group in re.findall(r"\[([\d,]+)\]", text) for n in group.split(",")})
            return f"Merged [{numbers[0]}] [{numbers[-1]}] " + "detail " * 45
        return reply(request)

    docs = [SourceText(path=f"notes/n{i:03d}.txt", text=f"Note {i} says {i * 7}.") for i in range(300)]
    chat = scripted_model([wordy] * 400, context_window=800)
    report = summarize_documents(chat, docs, SummaryOptions(summary_tokens=100, mode="map-reduce"))
    assert report["reduce_levels"] >= 2 and report["computed"] == 300
    assert all(r["prompt_tokens"] + r["max_new_tokens"] <= 800 for r in chat.backend.requests)
    cited = [f["path"] for f in report["files"] if f["cited"]]
    assert cited and set(cited) <= {d.path for d in docs} and "notes/n000.txt" in cited
