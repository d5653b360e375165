"""Structured output where a user asks for it: `feldspar generate --json-schema/--regex/--choice`,
`feldspar extract` (constrained by default), ``Feldspar.generate(schema=)`` / ``Feldspar.extract`` and
ChatGranite's ``with_structured_output``, all on the tiny random checkpoint (so validity is the grammar's)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
from pydantic import BaseModel

from tests.app.cli_runner import assert_one_error_line

SCHEMA = {"type": "object", "properties": {"topic": {"type": "string", "maxLength": 30},
                                           "steps": {"type": "array", "items": {"type": "integer"}, "maxItems": 3}},
          "required": ["topic", "steps"], "additionalProperties": False}


@pytest.fixture
def schema_file(tmp_path) -> Path:
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(SCHEMA), encoding="utf-8")
    return path


def test_generate_json_schema_regex_and_choice(cli, tiny_checkpoint, schema_file):
    common = ("-m", str(tiny_checkpoint), "--device", "cpu", "--json", "-n", "60", "-t", "1", "--seed", "7")
    out = json.loads(cli("generate", "Plan", "--json-schema", str(schema_file), *common).out)
    jsonschema.validate(json.loads(out["text"]), SCHEMA)
    assert out["random_weights"] is True and out["finish_reason"] == "stop"
    out = json.loads(cli("generate", "Date", "--regex", r"20[0-9]{2}-[01][0-9]", *common).out)
    assert re.fullmatch(r"20[0-9]{2}-[01][0-9]", out["text"])
    out = json.loads(cli("generate", "Pick", "--choice", "yes, no,maybe", *common).out)
    assert out["text"] in ("yes", "no", "maybe")


def test_generate_structure_flag_errors_are_one_line(cli, tiny_checkpoint, schema_file, tmp_path):
    model = ("-m", str(tiny_checkpoint), "--device", "cpu")
    assert_one_error_line(cli("generate", "x", "--regex", "a", "--choice", "a", *model), 2, "not several")
    assert_one_error_line(cli("generate", "x", "--regex", "(", *model), 2, "--regex: invalid regex")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"type": "object", "properties": {"p": {"type": "strin"}}}), encoding="utf-8")
    assert_one_error_line(cli("generate", "x", "--json-schema", str(bad), *model), 1, "/properties/p")


def test_extract_is_constrained_by_default_and_every_row_is_valid(cli, tiny_checkpoint, schema_file, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(3):
        (docs / f"note{i}.txt").write_text(f"Note {i}: restart the router, then wait {i} minutes.\n", encoding="utf-8")
    out = tmp_path / "rows.jsonl"
    result = cli("extract", str(docs), "--schema", str(schema_file), "--out", str(out), "-m", str(tiny_checkpoint),
                 "-n", "60", "--retries", "0")
    assert result.code == 0, result.err
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 3 and all(r["ok"] and r["constrained"] and r["attempts"] == 1 for r in rows), rows
    for row in rows:
        jsonschema.validate(row["data"], SCHEMA)
    assert "3 valid, 0 invalid" in result.err and "constrained" in result.err


@pytest.fixture(scope="module")
def feldspar(tiny_checkpoint, tmp_path_factory):
    from feldspar import Feldspar

    with Feldspar(home=tmp_path_factory.mktemp("api-home"), model=str(tiny_checkpoint), device="cpu",
                  dtype="float32", max_new_tokens=60) as fs:
        yield fs


def test_api_generate_with_schema_regex_choice(feldspar):
    answer = feldspar.generate("Plan", schema=SCHEMA, temperature=1.0, seed=3)
    assert answer["valid"] and answer["random_weights"] is True
    jsonschema.validate(answer["data"], SCHEMA)
    assert feldspar.generate("Pick", choice=["left", "right"])["text"] in ("left", "right")
    assert re.fullmatch("[a-c]{4}", feldspar.generate("x", regex="[a-c]{4}")["text"])
    with pytest.raises(ValueError):
        feldspar.generate("x", regex="a", choice=["a"])


def test_api_extract_rows_are_valid(feldspar, tmp_path):
    (tmp_path / "a.txt").write_text("Restart the router.", encoding="utf-8")
    report = feldspar.extract(SCHEMA, [str(tmp_path / "a.txt")], None, retries=0)
    (row,) = report["rows_data"]
    assert row["ok"] and row["constrained"]
    jsonschema.validate(row["data"], SCHEMA)


class Weather(BaseModel):
    city: str
    celsius: int


@pytest.mark.parametrize("method", ["json_schema", "function_calling", "json_mode"])
def test_chat_granite_with_structured_output(feldspar, method):
    runnable = feldspar.chat_model.with_structured_output(Weather if method != "json_mode" else dict, method=method)
    result = runnable.invoke("Weather in Oslo?")
    if method == "json_mode":
        assert isinstance(result, dict)
    else:
        assert isinstance(result, Weather)


def test_chat_granite_with_structured_output_include_raw(feldspar):
    result = feldspar.chat_model.with_structured_output(Weather, include_raw=True).invoke("Weather?")
    assert isinstance(result["parsed"], Weather) and result["parsing_error"] is None
    assert result["raw"].response_metadata["random_weights"] is True
