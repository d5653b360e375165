"""`feldspar bench gpu`: bf16 prefill and decode per quantisation on the GPU, with the checks that
must stay exact there (bench/cuda.py); one process, so the Mamba kernels are those it imports.

Parses flags into a ``bench.cuda.GpuConfig``, reports progress on stderr and prints a table of
tok/s with ratios to the unquantised row, then each variant's checks (or ``--json``).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from feldspar.cli.bench import check_names, parse_lengths, parse_quants, run_and_print
from feldspar.cli.root import JsonOpt, bench_app, console, print_table

CHECK_COLUMNS = ["quant", "reuse max |Δlogit|", "fused = forward tokens", "reload max |Δlogit|",
                 "max |Δlogit| vs bf16", "greedy agreement vs bf16", "weights MiB", "peak device MiB"]


def check_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    mib = 2**20
    return [{"quant": v["quant"], "reuse max |Δlogit|": v["reuse_max_logit_diff"],
             "fused = forward tokens": v["fused_vs_forward_tokens"],
             "reload max |Δlogit|": v.get("reload_max_logit_diff", ""),
             "max |Δlogit| vs bf16": v["max_logit_diff_vs_bf16"],
             "greedy agreement vs bf16": v["greedy_agreement_vs_bf16"],
             "weights MiB": round(v["weight_bytes"] / mib, 2),
             "peak device MiB": "" if v["peak_device_bytes"] is None else round(v["peak_device_bytes"] / mib)}
            for v in report["variants"]]


def print_gpu_report(report: dict[str, Any]) -> None:
    from feldspar.bench.cuda import table

    cfg = report["config"]
    kernels = ", ".join(name for name, found in report["kernels"].items() if found) or "none (torch paths)"
    title = (f"{cfg['preset']}{' (tiny)' if cfg['tiny'] else ''} bf16 on {report['device']}, torch "
             f"{report['torch']}, Mamba kernels: {kernels}")
    print_table(table(report), ["quant", "row", "way", "tokens_per_s", "vs_bf16"], title=title)
    print_table(check_rows(report), CHECK_COLUMNS, title="checks (random weights: kernels, not quality)")
    console.print(f"elapsed {report['elapsed_s']} s", highlight=False)


@bench_app.command("gpu")
def bench_gpu(
    preset: Annotated[str, typer.Option("--preset", help="catalog model, random weights")] = "granite-4.0-h-350m",
    prefill_lengths: Annotated[str, typer.Option("--prefill-lengths", help="prompt lengths, comma-separated")]
    = "1024,4096,32768",
    decode_tokens: Annotated[int, typer.Option("--decode-tokens", min=0,
                                               help="tokens decoded after the shortest prompt (0: none)")] = 64,
    quants: Annotated[str, typer.Option("--quants", help="quantisations beside bf16, comma-separated")] = "int8,int4",
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="timed runs per row; the best counts")] = 3,
    compile_step: Annotated[bool, typer.Option("--compile", help="also the torch.compile'd decode step")] = False,
    tiny: Annotated[bool, typer.Option("--tiny", help="the preset's miniature (smoke tests)")] = False,
    json_out: JsonOpt = False,
) -> None:
    """bf16 rows per quantisation on the GPU (on the CPU where there is none), with exactness checks."""
    from feldspar.bench.cuda import GpuConfig, run_gpu_bench

    cfg = GpuConfig(preset=check_names(preset, "bfloat16"), prefill_lengths=parse_lengths(prefill_lengths),
                    decode_tokens=decode_tokens, quants=("none", *parse_quants(quants)), repeats=repeats,
                    compile=compile_step, tiny=tiny, **({"chunk_size": 128, "quality_tokens": 64} if tiny else {}))
    run_and_print(run_gpu_bench, cfg, RuntimeError, print_gpu_report, json_out)
