"""`feldspar bench memory`: load time, peak RSS, time to first token and decode tokens/s of a
quantised random-weight preset, each variant in a fresh process (bench/memory.py).

Parses flags into a ``bench.memory.MemoryConfig``, reports progress on stderr and prints the
result as a table headed by the CPU and its flags (or ``--json``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from feldspar.cli.bench import check_names, parse_quants, run_and_print
from feldspar.cli.root import JsonOpt, bench_app, console, print_table, settings_from

COLUMNS = ["variant", "disk GiB", "load s", "peak RSS after load GiB", "peak RSS GiB", "prompt", "TTFT s",
           "decode tok/s"]
GIB = 1024**3


def memory_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"variant": r["variant"], "disk GiB": f"{r['disk_bytes'] / GIB:.2f}", "load s": f"{r['load_s']:.1f}",
             "peak RSS after load GiB": f"{r['load_peak_rss_bytes'] / GIB:.2f}",
             "peak RSS GiB": f"{r['peak_rss_bytes'] / GIB:.2f}", "prompt": r["prompt_tokens"],
             "TTFT s": f"{r['ttft_s']:.2f}",
             "decode tok/s": "" if r["decode_tok_s"] is None else f"{r['decode_tok_s']:.2f}"}
            for r in report["rows"]]


def print_memory_report(report: dict[str, Any]) -> None:
    console.print(f"CPU: {report.get('cpu') or 'unknown'}; flags: {' '.join(report.get('cpu_flags', [])) or 'none'}; "
                  f"RAM {report['ram_bytes'] / GIB:.1f} GiB; load average {' '.join(map(str, report['load_average']))}",
                  highlight=False)
    title = f"{report['preset']}{' (tiny)' if report['tiny'] else ''}, RANDOM WEIGHTS, one process per row"
    print_table(memory_rows(report), COLUMNS, title=title)
    for build in report["builds"]:
        console.print(f"built {build['variant']} layer by layer in {build['seconds']:.0f} s, peak RSS "
                      f"{build['peak_rss_bytes'] / GIB:.2f} GiB", highlight=False)
    for row in report["rows"]:
        console.print(f"{row['variant']} answered ({row['decode_tokens'] + 1} tokens, random weights): "
                      f"{row['answer']!r}", highlight=False, markup=False)


@bench_app.command("memory")
def bench_memory(
    preset: Annotated[str, typer.Option("--preset", help="catalog model, random weights")] = "granite-4.0-h-tiny",
    quants: Annotated[str, typer.Option("--quants", help="quantisations, comma-separated")] = "int8,int4",
    checkpoints: Annotated[Optional[Path], typer.Option(
        "--checkpoints", help="folder of the random checkpoints (reused; written layer by layer when missing); "
        "default <home>/bench-checkpoints")] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="float dtype of the unquantised parts")] = "bfloat16",
    new_tokens: Annotated[int, typer.Option("--new-tokens", min=1, help="tokens in the answer")] = 16,
    at_load: Annotated[bool, typer.Option("--at-load", help="also quantise a full-precision checkpoint while "
                                          "it loads (writes one in --dtype)")] = False,
    allow_large: Annotated[bool, typer.Option("--allow-large", help="allow checkpoints over 8 GiB")] = False,
    tiny: Annotated[bool, typer.Option("--tiny", help="the preset's miniature (smoke tests)")] = False,
    seed: Annotated[int, typer.Option("--seed", help="random seed of the weights")] = 0,
    json_out: JsonOpt = False,
) -> None:
    """Peak RSS, load time, time to first token and decode tok/s of quantised models."""
    from feldspar.bench.memory import MemoryConfig, run_memory_bench

    chosen = parse_quants(quants)
    if not chosen:
        raise typer.BadParameter("give at least one of int8, int4", param_hint="--quants")
    folder = checkpoints if checkpoints is not None else settings_from().home / "bench-checkpoints"
    cfg = MemoryConfig(preset=check_names(preset, dtype), checkpoints=str(folder.expanduser()), quants=chosen,
                       dtype=dtype, tiny=tiny, seed=seed, new_tokens=new_tokens, at_load=at_load,
                       allow_large=allow_large)
    run_and_print(run_memory_bench, cfg, RuntimeError, print_memory_report, json_out)
