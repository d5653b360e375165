"""`feldspar bench engine` runs end to end on tiny presets; its counts and report are well formed.

Correctness only: no assertion here depends on how fast anything ran.
"""

from __future__ import annotations

import json

import pytest

from feldspar.cli.bench import parse_lengths
from feldspar.cli.root import console
from feldspar.bench import roofline

from tests.app.cli_runner import run_cli

TINY_ARGS = ["--tiny", "--prefill-lengths", "80,32", "--decode-tokens", "8", "--repeats", "1", "--chunk-size", "48",
             "--no-compile"]
ROW_KEYS = {"row", "impl", "kind", "tokens", "seconds", "tokens_per_s", "achieved", "achieved_unit",
            "roofline_pct", "vs_baseline"}


def test_bench_engine_json_has_every_row_with_positive_numbers(capsys, monkeypatch):
    result = run_cli(["bench", "engine", *TINY_ARGS, "--quants", "none", "--json"], capsys, monkeypatch)
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["preset"] == "granite-4.0-h-350m" and report["tiny"] is True
    machine = report["machine"]
    assert machine["matmul_gflops"] > 0 and machine["bandwidth_gbs"] > 0 and machine["threads"] >= 1
    rows = report["rows"]
    labels = [(r["row"], r["impl"]) for r in rows]
    assert labels == [
        ("prefill 32", "feldspar"), ("prefill 32", "model.generate"),
        ("decode after 32", "feldspar"), ("decode after 32", "model.generate"),
        ("prefill 80", "feldspar"), ("prefill 80", "model.generate"),
    ]
    for row in rows:
        assert ROW_KEYS <= set(row)
        assert row["seconds"] > 0 and row["tokens_per_s"] > 0 and row["achieved"] >= 0 and row["roofline_pct"] >= 0
        assert (row["vs_baseline"] is not None) == (row["impl"] == "feldspar")
    assert rows[0]["forwards"] == 1 and rows[4]["forwards"] == 2  # 80 tokens in chunks of 48
    assert (rows[2]["tokens"], rows[3]["tokens"]) == (8, 7)  # baseline: (t(N) - t(1)) / (N - 1)
    assert {r["achieved_unit"] for r in rows if r["kind"] == "decode"} == {"GB/s"}


def test_bench_engine_table_without_baseline_on_a_moe_preset(capsys, monkeypatch):
    args = ["bench", "engine", "--preset", "h-tiny", "--tiny", "--prefill-lengths", "16", "--decode-tokens", "2",
            "--repeats", "1", "--no-baseline", "--quants", "none", "--no-compile"]
    monkeypatch.setattr(console, "width", 160)  # rich squeezes cells on the 80 columns of a test
    result = run_cli(args, capsys, monkeypatch)
    assert result.code == 0, result.err
    assert "granite-4.0-h-tiny (tiny)" in result.out
    assert "prefill" in result.out and "decode" in result.out and "feldspar" in result.out
    assert "roofline: matmul" in result.out


def side_by_side_rows(capsys, monkeypatch, kind: str, length: str, decode_tokens: str, *extra: str) -> list[dict]:
    """The ``kind`` rows (comma-separated kinds: all of them) of a tiny one-repeat `bench engine
    --json` run with ``extra`` flags."""
    args = ["bench", "engine", "--tiny", "--prefill-lengths", length, "--decode-tokens", decode_tokens,
            "--repeats", "1", "--no-baseline", "--quants", "none", *extra, "--json"]
    if "--compile" not in extra:
        args.append("--no-compile")
    result = run_cli(args, capsys, monkeypatch)
    assert result.code == 0, result.err
    return [r for r in json.loads(result.out)["rows"] if r["kind"] in kind.split(",")]


def test_bench_engine_times_both_decode_steps_side_by_side(capsys, monkeypatch):
    decode = side_by_side_rows(capsys, monkeypatch, "decode", "16", "3", "--decode-step", "both")
    assert [(r["impl"], r["decode_step"]) for r in decode] == [("feldspar", "fast"), ("feldspar (ref step)", "ref")]
    assert decode[1]["vs_feldspar"] > 0


def test_bench_engine_times_the_compiled_decode_step_and_scan_beside_the_eager_ones(capsys, monkeypatch):
    rows = side_by_side_rows(capsys, monkeypatch, "decode,prefill", "16", "3", "--compile")
    for kind in ([r for r in rows if r["kind"] == "decode"], [r for r in rows if r["kind"] == "prefill"]):
        assert [(r["impl"], r["compiled"]) for r in kind] == [("feldspar", False), ("feldspar, compiled", True)]
        assert kind[1]["compile_s"] > 0 and kind[1]["vs_feldspar"] > 0 and "compile_s" not in kind[0]


def test_bench_engine_times_both_prefills_side_by_side(capsys, monkeypatch):
    prefill = side_by_side_rows(capsys, monkeypatch, "prefill", "40", "0", "--prefill", "both")
    assert [(r["impl"], r["prefill"]) for r in prefill] == [("feldspar", "fast"), ("feldspar (ref prefill)", "ref")]
    assert prefill[0]["achieved"] > 0 and prefill[1]["vs_feldspar"] > 0


def test_bench_engine_rejects_bad_flags(capsys, monkeypatch):
    assert run_cli(["bench", "engine", "--preset", "granite-9"], capsys, monkeypatch).code == 1
    assert run_cli(["bench", "engine", "--prefill-lengths", "1k"], capsys, monkeypatch).code == 2
    assert run_cli(["bench", "engine", "--dtype", "int8"], capsys, monkeypatch).code == 2
    assert run_cli(["bench", "engine", "--decode-step", "compiled"], capsys, monkeypatch).code == 2
    assert run_cli(["bench", "engine", "--prefill", "compiled"], capsys, monkeypatch).code == 2


def test_parse_lengths():
    assert parse_lengths("1024, 4096") == (1024, 4096)
    for bad in ("", "0", "a,b"):
        with pytest.raises(Exception):
            parse_lengths(bad)


def test_flop_counts_do_not_depend_on_chunking_except_the_head_and_scan():
    from feldspar.model.presets import build_random_model

    cost = roofline.model_cost(build_random_model("granite-4.0-h-350m", device="meta"))
    assert (cost.attention_layers, cost.mamba_layers) == (4, 28)
    assert cost.body_params + cost.head_params == 340_332_224
    whole = roofline.prefill_flops(cost, [4096])
    chunked = roofline.prefill_flops(cost, [2048, 4096])
    assert chunked["attention"] == whole["attention"]  # causal attention: same pairs either way
    assert chunked["linear"] - whole["linear"] == 2 * cost.head_params  # one more LM head
    assert chunked["scan"] == whole["scan"]  # both use the 256-token scan chunk
    assert whole["linear"] > whole["scan"] > whole["attention"] > 0


def test_tensor_bytes_counts_each_tensor_once():
    import torch

    t = torch.zeros(10, dtype=torch.float32)
    assert roofline.tensor_bytes({"a": t, "b": [t, torch.zeros(3, dtype=torch.bfloat16)], "n": 3}) == 46
