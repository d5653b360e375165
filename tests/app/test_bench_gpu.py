"""`feldspar bench gpu` (bench/cuda.py) on the CPU, tiny: its rows and its exactness checks.

No GPU is lent to CI, so these run the same code on the CPU; they check what the report says
(reuse against recompute, the fused step against transformers' forward, a quantised model
reloaded from disk, the ratio column), never how fast anything ran.
"""

from __future__ import annotations

import json

import pytest
import torch

from feldspar.bench.cuda import GpuConfig, run_gpu_bench, table
from feldspar.cli.root import console

from tests.app.cli_runner import assert_one_error_line, run_cli

BF16_STEP = torch.finfo(torch.bfloat16).eps  # the spacing of bf16 numbers at 1.0
TINY = dict(tiny=True, prefill_lengths=(48, 96), decode_tokens=4, repeats=1, chunk_size=32, quality_tokens=32)


@pytest.fixture(scope="module")
def report():
    return run_gpu_bench(GpuConfig(**TINY))


def test_every_variant_keeps_reuse_the_fused_step_and_a_reload_exact(report):
    # reuse and recompute split the prompt into different prefill calls, so their fp32 sums differ
    # in the last bits and a bf16 logit may round to its neighbour: two bf16 steps at the logit scale
    # at most (a reuse that dropped the state is off by the whole scale, 18-19 on this model)
    assert [v["quant"] for v in report["variants"]] == ["none", "int8", "int4"]
    for variant in report["variants"]:
        assert variant["reuse_max_logit_diff"] <= 2 * BF16_STEP * variant["logit_scale"], variant["quant"]
        assert variant["fused_vs_forward_tokens"] == "32/32", variant["quant"]
    assert [v.get("reload_max_logit_diff") for v in report["variants"]] == [None, 0.0, 0.0]


def test_quantised_variants_differ_from_bf16_and_are_smaller(report):
    base, int8, int4 = report["variants"]
    assert base["max_logit_diff_vs_bf16"] == 0.0 and base["greedy_agreement_vs_bf16"] == 1.0
    assert 0 < int8["max_logit_diff_vs_bf16"] and 0 < int4["max_logit_diff_vs_bf16"]
    assert base["weight_bytes"] > int8["weight_bytes"] > int4["weight_bytes"]


def test_the_table_has_each_row_per_variant_with_its_ratio_to_bf16(report):
    rows = table(report)
    ways = {(r["row"], r["way"]) for r in rows}
    assert ways == {("prefill 48", "feldspar"), ("prefill 96", "feldspar"), ("decode after 48", "fused step"),
                    ("decode after 48", "transformers forward")}
    assert all(r["vs_bf16"] == 1.0 for r in rows if r["quant"] == "none")
    assert all(r["tokens_per_s"] > 0 and r["vs_bf16"] > 0 for r in rows)
    assert set(report["kernels"]) == {"mamba_ssm", "causal_conv1d"} and report["device"] == "cpu"


def test_bench_gpu_prints_rows_and_checks_and_json(capsys, monkeypatch):
    monkeypatch.setattr(console, "width", 220)
    args = ["bench", "gpu", "--tiny", "--prefill-lengths", "40", "--decode-tokens", "2", "--repeats", "1",
            "--quants", "int4"]
    result = run_cli(args, capsys, monkeypatch)
    assert result.code == 0, result.err
    assert "Mamba kernels" in result.out and "reload max" in result.out and "32/32" in result.out
    result = run_cli(args + ["--json"], capsys, monkeypatch)
    assert [v["quant"] for v in json.loads(result.out)["variants"]] == ["none", "int4"]


def test_bench_gpu_with_an_unknown_quantisation_is_one_error_line(capsys, monkeypatch):
    result = run_cli(["bench", "gpu", "--tiny", "--quants", "int3"], capsys, monkeypatch)
    assert_one_error_line(result, 2, "int3")
