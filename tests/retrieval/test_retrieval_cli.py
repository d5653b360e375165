"""The CLI as a user runs it: ingest/search/sources/collections/eval JSON, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

from tests.retrieval.retrieval_helpers import REPO, run_cli


def write_docs(root: Path) -> Path:
    root.mkdir()
    (root / "alpha.md").write_text("# Alpha\n\nThe obsidian mirror reflects volcanic glass.\n")
    (root / "beta.txt").write_text("Beta notes on quartz crystals and their piezoelectric effect.\n")
    (root / "noise.bin").write_bytes(b"\x00\x01")
    return root


def test_ingest_search_sources_collections_and_eval(tmp_path):
    home, root = tmp_path / "home", write_docs(tmp_path / "docs")
    ingest = run_cli("ingest", str(root), "--collection", "notes", "--json", home=home)
    assert ingest.returncode == 0, ingest.stderr
    counts = json.loads(ingest.stdout)
    assert (counts["indexed"], counts["skipped"]) == (2, 1)
    assert counts["problems"] == [{"path": "noise.bin", "status": "skipped", "reason": "unsupported type .bin"}]

    search = run_cli("search", "piezoelectric quartz", "-k", "2", "--collection", "notes", "--json", home=home)
    hits = json.loads(search.stdout)
    assert hits[0]["path"] == "beta.txt"
    assert {"path", "page", "start", "end", "heading", "score", "text"} <= set(hits[0])
    assert hits[0]["score"] >= hits[-1]["score"]

    sources = json.loads(run_cli("sources", "--collection", "notes", "--status", "skipped", "--json", home=home).stdout)
    assert [row["path"] for row in sources] == ["noise.bin"]
    collections = json.loads(run_cli("collections", "--json", home=home).stdout)
    assert collections[0]["name"] == "notes" and collections[0]["chunks"] == 2

    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question": "volcanic glass mirror", "path": "alpha.md"}) + "\n")
    report = json.loads(run_cli("eval", "retrieval", str(questions), "--collection", "notes", "--json", home=home).stdout)
    assert report["recall@1"] == 1.0 and report["mrr"] == 1.0


def test_user_errors_are_one_line(tmp_path):
    home = tmp_path / "home"
    missing = run_cli("ingest", str(tmp_path / "absent"), home=home)
    assert missing.returncode == 1 and missing.stderr.strip() == f"error: no such file or directory: {tmp_path / 'absent'}"
    unknown = run_cli("search", "x", "--collection", "nothing-here", home=home)
    assert unknown.returncode == 1 and unknown.stderr.strip().startswith("error: no collection 'nothing-here'")
    bad_name = run_cli("sources", "--collection", "a", home=home)
    assert bad_name.returncode == 1 and "invalid collection name" in bad_name.stderr
    assert "Traceback" not in missing.stderr + unknown.stderr + bad_name.stderr


def test_shipped_eval_questions_point_at_real_docs():
    lines = (REPO / "docs" / "eval" / "docs_questions.jsonl").read_text().splitlines()
    assert len(lines) >= 8
    for line in lines:
        item = json.loads(line)
        assert item["question"] and (REPO / "docs" / item["path"]).is_file()
