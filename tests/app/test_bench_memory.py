"""`feldspar bench memory` runs each variant in a fresh process on a tiny preset and prints its table.

Correctness only: no assertion depends on how fast anything ran or how much memory it took.
"""

from __future__ import annotations


from feldspar.bench.memory import MemoryConfig, checkpoint_dir, child_measure
from feldspar.cli.root import console
from feldspar.model.checkpoint_random import write_random_checkpoint

from tests.app.cli_runner import assert_one_error_line, run_cli


def test_bench_memory_prints_load_time_peak_rss_and_decode_rate_per_quantisation(tmp_path, capsys, monkeypatch):
    cfg = MemoryConfig(preset="granite-4.0-h-tiny", checkpoints=str(tmp_path), tiny=True)
    for quant in ("int8", "int4"):  # written here so the run below measures only (one process per row)
        write_random_checkpoint("h-tiny", checkpoint_dir(cfg, quant), tiny=True, dtype="bfloat16", quant=quant)
    monkeypatch.setattr(console, "width", 200)  # rich squeezes cells on the 80 columns of a test
    result = run_cli(["bench", "memory", "--preset", "h-tiny", "--tiny", "--quants", "int8,int4", "--checkpoints",
                      str(tmp_path), "--new-tokens", "3"], capsys, monkeypatch)
    assert result.code == 0, result.err
    lines, words = result.out.splitlines(), " ".join(result.out.split())
    assert words.startswith("CPU: ") and "flags:" in words and "load average" in words
    assert "peak RSS" in result.out and "decode tok/s" in result.out and "random weights" in result.out.lower()
    rows = [line for line in lines if line.startswith("│ int")]
    assert [row.split("│")[1].strip() for row in rows] == ["int8", "int4"]
    assert "built" not in result.out  # the checkpoints were reused, not rewritten


def test_a_measured_row_holds_positive_numbers_and_the_quantisation_it_loaded(tmp_path):
    path = write_random_checkpoint("h-tiny", tmp_path / "q", tiny=True, dtype="bfloat16", quant="int4")
    row = child_measure(str(path), "none", "bfloat16", "3")
    assert row["quant"] == "int4" and row["dtype"] == "bfloat16" and row["decode_tokens"] == 2
    assert row["peak_rss_bytes"] >= row["load_peak_rss_bytes"] > 0
    assert row["load_s"] >= 0 and row["ttft_s"] > 0 and row["decode_tok_s"] > 0 and row["prompt_tokens"] > 5


def test_bench_memory_without_a_quantisation_is_one_error_line(capsys, monkeypatch):
    result = run_cli(["bench", "memory", "--quants", "none"], capsys, monkeypatch)
    assert_one_error_line(result, 2, "int8, int4")
