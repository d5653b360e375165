"""`feldspar bench structured` on the miniature: the rows it measures say what they should (no timings asserted)."""

from __future__ import annotations

from feldspar.bench.structured import StructuredBenchConfig, run_structured_bench
from feldspar.cli.bench import structured_rows


def test_constrained_outputs_are_all_valid_and_the_table_has_every_measure():
    cfg = StructuredBenchConfig(preset="granite-4.0-h-350m", seeds=1, max_new_tokens=40, decode_tokens=4, repeats=1,
                                extract_docs=1, full=False)
    report = run_structured_bench(cfg)
    assert report["validity"]["constrained"]["share"] == 1.0
    assert report["validity"]["free"]["share"] < 1.0  # random weights do not write JSON on their own
    assert report["extract"]["constrained"]["valid_first_try"] == report["extract"]["constrained"]["rows"] == 1
    (decode,) = report["decode"]
    assert decode["free_s_per_token"] > 0 and decode["constrained_s_per_token"] > 0
    assert decode["compile_50_properties_s"] > 0 and decode["mask_s_per_token"] > 0 and decode["in_line_s_per_token"] > 0
    parts = decode["step_costs"]
    assert parts["steps"] >= 1 and all(parts[k] > 0 for k in ("forward", "mask", "apply_pick", "advance"))
    measures = [row["measure"] for row in structured_rows(report)]
    assert any("schema-valid outputs, constrained" in m for m in measures)
    assert any("compile 50-property schema" in m for m in measures)
    assert any("forward / mask / apply+pick / advance" in m for m in measures)
    assert any("extract rows valid first try, retry" in m for m in measures)
