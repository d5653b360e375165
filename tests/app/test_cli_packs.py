"""`feldspar pack …`, `feldspar ask` and `feldspar bench reuse` through the real entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from feldspar.model.loader import dtype_choice


@pytest.fixture
def notes(tmp_path: Path) -> Path:
    path = tmp_path / "notes.md"
    path.write_text("# Feldspar\n\nOrthoclase is a potassium feldspar. Quartz is harder.\n", encoding="utf-8")
    return path


def test_create_list_show_ask_and_remove(cli, tiny_checkpoint, notes):
    made = cli("pack", "create", "minerals", str(notes), "-m", str(tiny_checkpoint), "--json")
    assert made.code == 0, made.err
    tokens = json.loads(made.out)["tokens"]
    listed = json.loads(cli("pack", "list", "--json").out)
    assert [row["name"] for row in listed] == ["minerals"] and listed[0]["tokens"] == tokens
    shown = json.loads(cli("pack", "show", "minerals", "--json").out)
    auto_dtype = str(dtype_choice("auto", torch.device("cpu"))[0]).removeprefix("torch.")  # bf16 where native
    assert shown["sources"][0]["path"].endswith("notes.md") and shown["dtype"] == auto_dtype
    asked = cli("ask", "--pack", "minerals", "What is orthoclase?", "Which is harder?", "-n", "4", "--json")
    assert asked.code == 0, asked.err
    answers = json.loads(asked.out)["answers"]
    assert [a["question"] for a in answers] == ["What is orthoclase?", "Which is harder?"]
    for answer in answers:  # one thread: the pack's state, then the first turn's, are reused
        usage = answer["usage"]
        assert usage["reused_tokens"] >= tokens and answer["stop_reason"] == "answered"
        assert usage["reused_tokens"] + usage["computed_tokens"] == usage["prompt_tokens"]
    assert answers[1]["usage"]["reused_tokens"] > answers[0]["usage"]["prompt_tokens"] - 4
    assert cli("pack", "rm", "minerals").code == 0
    assert json.loads(cli("pack", "list", "--json").out) == []


def test_ask_verbose_prints_reuse_stats_and_no_reuse_computes_everything(cli, tiny_checkpoint, notes):
    assert cli("pack", "create", "m", str(notes), "-m", str(tiny_checkpoint)).code == 0
    verbose = cli("ask", "--pack", "m", "Why?", "-n", "3", "--verbose")
    assert verbose.code == 0 and "reused" in verbose.err and "loaded" in verbose.err
    fresh = json.loads(cli("ask", "--pack", "m", "Why?", "-n", "3", "--no-reuse", "--json").out)["answers"][0]
    assert fresh["usage"]["reused_tokens"] == 0 and fresh["usage"]["computed_tokens"] == fresh["usage"]["prompt_tokens"]


def test_ask_without_a_pack(cli, tiny_checkpoint):
    result = cli("ask", "Hello?", "-m", str(tiny_checkpoint), "-n", "3", "--policy", "none", "--json")
    assert result.code == 0, result.err
    answer = json.loads(result.out)["answers"][0]
    assert answer["usage"]["completion_tokens"] <= 3 and [s["node"] for s in answer["trace"]] == ["model", "finalize"]


def test_user_errors_are_one_line_and_exit_1(cli, tiny_checkpoint, notes, tmp_path):
    assert cli("pack", "create", "m", str(notes), "-m", str(tiny_checkpoint)).code == 0
    cases = [
        (("pack", "create", "m", str(notes), "-m", str(tiny_checkpoint)), "already exists"),
        (("pack", "create", "n", str(tmp_path / "missing.txt"), "-m", str(tiny_checkpoint)), "no such file"),
        (("pack", "show", "nope"), "no pack named"),
        (("pack", "rm", "nope"), "no pack named"),
        (("ask", "--pack", "nope", "q"), "no pack named"),
        (("pack", "create", "bad/name", str(notes), "-m", str(tiny_checkpoint)), "invalid pack name"),
    ]
    for args, message in cases:
        result = cli(*args)
        errors = [line for line in result.err.splitlines() if line.startswith("error:")]
        assert result.code == 1 and len(errors) == 1 and message in errors[0], (args, result.err)
        assert result.err.rstrip().endswith(errors[0]) and "Traceback" not in result.err


def test_ask_refuses_a_pack_made_with_another_model(cli, tiny_checkpoint, tiny_dense_checkpoint, notes):
    assert cli("pack", "create", "m", str(notes), "-m", str(tiny_checkpoint)).code == 0
    result = cli("ask", "--pack", "m", "q", "-m", str(tiny_dense_checkpoint))
    assert result.code == 1 and "made with model" in result.err


def test_bench_reuse_smoke_on_the_tiny_preset(cli):
    result = cli("bench", "reuse", "--tiny", "--contexts", "96,160", "--pack-contexts", "160", "--new-tokens", "8",
                 "--tiny-context", "256", "--chunk-size", "64", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    rows = report["rows"]
    assert [r["context"] for r in rows] == [96, 160]
    assert all(r["recompute_s"] > 0 and r["reuse_s"] > 0 and r["bare_s"] > 0 for r in rows)
    assert rows[1]["pack_load_s"] > 0 and "pack_load_s" not in rows[0]
    assert report["long_context"]["tokens"] == 256 and report["long_context"]["peak_rss_bytes"] > 0
    assert report["sizes"]["kv_bytes_per_1k_tokens"] > 0


def test_ask_with_a_pack_resumes_from_it_when_reuse_is_off_in_settings(cli, tiny_checkpoint, notes, monkeypatch):
    made = json.loads(cli("pack", "create", "m", str(notes), "-m", str(tiny_checkpoint), "--json").out)
    monkeypatch.setenv("FELDSPAR_REUSE", "false")
    asked = cli("ask", "--pack", "m", "Why?", "-n", "2", "--json")
    assert asked.code == 0, asked.err
    answer = json.loads(asked.out)["answers"][0]
    assert answer["usage"]["reused_tokens"] >= made["tokens"] > 0
