"""`feldspar bench serve` runs end to end on the tiny preset: its counts add up and reuse is seen.

Correctness only: no assertion here depends on how fast anything ran.
"""

from __future__ import annotations

import json

from tests.app.cli_runner import assert_one_error_line, run_cli


def test_bench_serve_json_counts_every_request_and_sees_the_shared_prefix(capsys, monkeypatch):
    result = run_cli(["bench", "serve", "--requests", "6", "--clients", "2", "--max-new-tokens", "2", "--json"],
                     capsys, monkeypatch)
    assert result.code == 0, result.err
    report = json.loads(result.out)
    (row,) = report["rows"]
    assert row["target"] == "granite-4.0-h-350m (tiny)" and report["queue"] == 8
    assert row["completed"] + row["refused_429"] + row["errors"] == row["requests"] == 6
    assert row["errors"] == 0 and row["refused_429"] == 0 and row["completed"] == 6  # 2 clients fit the queue
    assert 0 < row["reused_share"] < 1  # the shared system prompt is resumed from saved state, the questions not
    assert 0 < row["ttft_p50_s"] <= row["ttft_p95_s"] and row["requests_per_s"] > 0


def test_bench_serve_refuses_an_unknown_preset(capsys, monkeypatch):
    result = run_cli(["bench", "serve", "--preset", "granite-9"], capsys, monkeypatch)
    assert_one_error_line(result, 1, "granite-9")
