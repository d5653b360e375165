"""`extract` on the scripted Granite model: JSON Schema validation, retries that carry the error back,
rows kept when still invalid, per-chunk rows with spans and pages, bad schemas, unreadable files, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.agents.agent_helpers import scripted_model

from feldspar.agents.errors import AgentError
from feldspar.agents.extract import SchemaInvalid
from feldspar.settings import load_settings
from feldspar.workflows import extract

SCHEMA = {"type": "object", "properties": {"topic": {"type": "string"}, "pages": {"type": "integer", "minimum": 1}},
          "required": ["topic"], "additionalProperties": False}


@pytest.fixture
def settings(tmp_path):
    return load_settings(home=tmp_path / "home")


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_invalid_json_then_a_schema_failure_are_sent_back_until_valid(corpus, settings, tmp_path):
    chat = scripted_model(["Sure! Here it is: topic=router", '{"topic": 7}', '```json\n{"topic": "router"}\n```'])
    out = tmp_path / "rows.jsonl"
    report = extract(settings, SCHEMA, [corpus / "guide.md"], out, chat_model=chat)
    (row,) = rows_of(out)
    assert row["ok"] is True and row["data"] == {"topic": "router"} and row["attempts"] == 3
    assert row["path"] == str(corpus / "guide.md") and row["chunk"] is None
    text = (corpus / "guide.md").read_text(encoding="utf-8")
    assert row["spans"] == [{"start": 0, "end": len(text), "page": None}]
    first, second, third = chat.backend.requests
    assert '"required": [\n  "topic"\n ]' in first["messages"][0]["content"]  # the schema is in the system prompt
    assert "hold the recessed button" in first["messages"][1]["content"]
    assert second["messages"][-2] == {"role": "assistant", "content": "Sure! Here it is: topic=router"}
    assert second["messages"][-1]["content"].startswith("That answer is invalid: not valid JSON (")
    assert "fails the schema at topic: 7 is not of type 'string'" in third["messages"][-1]["content"]
    assert (report["valid"], report["invalid"], report["model_calls"]) == (1, 0, 3)


def test_an_answer_still_invalid_after_the_retries_is_kept_with_its_error_and_raw_text(corpus, settings, tmp_path):
    chat = scripted_model(['{"topic": "x", "colour": "red"}'] * 2 + ['{"topic": "minerals"}'])
    out = tmp_path / "rows.jsonl"
    report = extract(settings, SCHEMA, [corpus / "guide.md", corpus / "minerals.py"], out, retries=1, chat_model=chat)
    bad, good = rows_of(out)
    assert bad["ok"] is False and bad["attempts"] == 2 and bad["raw"] == '{"topic": "x", "colour": "red"}'
    assert "Additional properties are not allowed ('colour' was unexpected)" in bad["error"]
    assert bad["data"] == {"topic": "x", "colour": "red"}  # what the model said, for a human to look at
    assert good["ok"] is True and good["data"] == {"topic": "minerals"} and good["path"].endswith("minerals.py")
    assert (report["rows"], report["valid"], report["invalid"]) == (2, 1, 1)
    with pytest.raises(AgentError, match="retries"):
        extract(settings, SCHEMA, [corpus / "guide.md"], tmp_path / "other.jsonl", retries=-1,
                chat_model=scripted_model([]))


def test_per_chunk_rows_carry_their_spans_and_pages(corpus, settings, tmp_path):
    big = tmp_path / "big.md"
    big.write_text("\n\n".join(f"## Part {n}\n\n" + "Feldspar is common. " * 40 for n in range(4)) + "\n",
                   encoding="utf-8")
    chat = scripted_model(['{"topic": "feldspar"}'] * 50, context_window=900)
    out = tmp_path / "rows.jsonl"
    report = extract(settings.model_copy(update={"max_new_tokens": 64}), SCHEMA, [big, corpus / "manual.pdf"], out,
                     per_chunk=True, chat_model=chat)
    rows = rows_of(out)
    text = big.read_text(encoding="utf-8")
    md = [r for r in rows if r["path"] == str(big)]
    assert len(md) >= 4 and [r["chunk"] for r in md] == list(range(len(md)))
    for row in md:
        (span,) = row["spans"]
        piece = text[span["start"]:span["end"]]
        assert piece.strip() and piece in next(r for r in chat.backend.requests
                                               if piece in r["messages"][1]["content"])["messages"][1]["content"]
    pdf = [r for r in rows if r["path"].endswith("manual.pdf")]
    assert [r["spans"][0]["page"] for r in pdf] == [1, 2]
    assert report["rows"] == len(rows) and all(r["ok"] for r in rows)


def test_a_schema_that_is_not_json_schema_fails_before_any_model_work(corpus, settings, tmp_path):
    chat = scripted_model([])
    with pytest.raises(SchemaInvalid, match="is not a valid JSON Schema: 'banana' is not valid"):
        extract(settings, {"type": "banana"}, [corpus / "guide.md"], tmp_path / "a.jsonl", chat_model=chat)
    not_json = tmp_path / "schema.json"
    not_json.write_text("{type: object", encoding="utf-8")
    with pytest.raises(SchemaInvalid, match="schema.json is not JSON"):
        extract(settings, not_json, [corpus / "guide.md"], tmp_path / "a.jsonl", chat_model=chat)
    with pytest.raises(SchemaInvalid, match="not a JSON Schema: it is a JSON list"):
        extract(settings, [1, 2], [corpus / "guide.md"], tmp_path / "a.jsonl", chat_model=chat)
    assert chat.backend.requests == [] and not (tmp_path / "a.jsonl").exists()


def test_unreadable_files_are_reported_and_the_rest_extracted(corpus, settings, tmp_path):
    blob = tmp_path / "blob.txt"
    blob.write_bytes(b"\x00\x01\x02 binary")
    out = tmp_path / "rows.jsonl"
    report = extract(settings, SCHEMA, [blob, corpus / "guide.md", tmp_path / "gone.md"], out,
                     chat_model=scripted_model(['{"topic": "router"}']))
    assert [(Path(s["path"]).name, s["reason"]) for s in report["skipped"]] == [
        ("blob.txt", "binary content"), ("gone.md", "no such file or directory")]
    assert [Path(r["path"]).name for r in rows_of(out)] == ["guide.md"]
    with pytest.raises(AgentError, match="no readable files in .*blob.txt: binary content"):
        extract(settings, SCHEMA, [blob], tmp_path / "none.jsonl", chat_model=scripted_model([]))


def test_a_rerun_appends_only_what_is_missing_and_drops_a_cut_off_last_line(corpus, settings, tmp_path):
    out = tmp_path / "rows.jsonl"
    paths = [corpus / "guide.md", corpus / "minerals.py"]
    extract(settings, SCHEMA, paths[:1], out, chat_model=scripted_model(['{"topic": "router"}']))
    with open(out, "a", encoding="utf-8") as handle:
        handle.write('{"path": "cut off in the mid')  # a run killed while writing
    chat = scripted_model(['{"topic": "minerals"}'])
    report = extract(settings, SCHEMA, paths, out, chat_model=chat)
    assert report["skipped_done"] == 1 and len(chat.backend.requests) == 1
    assert [r["data"]["topic"] for r in rows_of(out)] == ["router", "minerals"]


def test_a_file_too_long_for_one_prompt_gets_a_row_that_says_so(settings, tmp_path):
    big = tmp_path / "big.txt"
    big.write_text("Feldspar is common. " * 200, encoding="utf-8")
    chat = scripted_model([], context_window=900)
    out = tmp_path / "rows.jsonl"
    report = extract(settings.model_copy(update={"max_new_tokens": 64}), SCHEMA, str(big), out, chat_model=chat)
    (row,) = rows_of(out)
    assert row["ok"] is False and row["attempts"] == 0 and "over the 836 tokens the window leaves" in row["error"]
    assert row["error"].endswith("extract per chunk instead") and chat.backend.requests == []
    assert report["invalid"] == 1
