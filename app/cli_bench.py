"""`feldspar bench engine`: Feldspar prefill/decode vs `model.generate`, against the roofline.

Parses flags into a ``bench.engine.BenchConfig``, reports progress on stderr and prints the
result as a table (or ``--json``). Knows nothing of how timings are taken or counted; see
bench/engine.py, bench/roofline.py and docs/benchmarks.md.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from app.cli_root import JsonOpt, bench_app, console, err_console, print_json, print_table

TABLE_COLUMNS = ["row", "impl", "tokens", "seconds", "tokens/s", "achieved", "% of roofline", "vs baseline"]


def parse_lengths(text: str) -> tuple[int, ...]:
    """"1024,4096" -> (1024, 4096); every length a positive integer."""
    try:
        lengths = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated token counts, got {text!r}") from None
    if not lengths or min(lengths) < 1:
        raise typer.BadParameter(f"expected positive token counts, got {text!r}")
    return lengths


def check_names(preset: str, dtype: str) -> str:
    """The catalog name of ``preset`` (errors are user errors) after checking ``dtype``."""
    from model.catalog import get_spec
    from model.presets import resolve_dtype

    try:
        resolve_dtype(dtype)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--dtype") from None
    return get_spec(preset).name


def table_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for r in report["rows"]:
        rows.append({
            "row": r["row"], "impl": r["impl"], "tokens": r["tokens"], "seconds": f"{r['seconds']:.2f}",
            "tokens/s": f"{r['tokens_per_s']:.1f}", "achieved": f"{r['achieved']:.1f} {r['achieved_unit']}",
            "% of roofline": f"{r['roofline_pct']:.1f}%",
            "vs baseline": "" if r["vs_baseline"] is None else f"{r['vs_baseline']:.2f}x",
        })
    return rows


def print_report(report: dict[str, Any]) -> None:
    machine = report["machine"]
    title = f"{report['preset']}{' (tiny)' if report['tiny'] else ''}, {report['dtype']}, random weights"
    print_table(table_rows(report), TABLE_COLUMNS, title=title)
    console.print(
        f"roofline: matmul {machine['matmul_gflops']:.1f} GFLOP/s ({machine['dtype']}), "
        f"memory {machine['bandwidth_gbs']:.1f} GB/s, {machine['threads']} threads; "
        f"prefill % is of matmul FLOP/s, decode % of bandwidth; vs baseline = Feldspar tokens/s "
        f"over model.generate tokens/s; {report['elapsed_s']:.0f} s in all"
    )


@bench_app.command("engine")
def bench_engine(
    preset: Annotated[str, typer.Option("--preset", help="catalog model to build with random weights")]
    = "granite-4.0-h-350m",
    dtype: Annotated[str, typer.Option("--dtype", help="float32 or bfloat16")] = "float32",
    prefill_lengths: Annotated[str, typer.Option("--prefill-lengths", help="prompt lengths, comma-separated")]
    = "1024,4096",
    decode_tokens: Annotated[int, typer.Option("--decode-tokens", min=0,
                                               help="tokens decoded after the shortest prompt (0: none)")] = 64,
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="timed runs per row; the best counts")] = 2,
    chunk_size: Annotated[int, typer.Option("--chunk-size", min=1, help="Feldspar prefill chunk (tokens)")]
    = 2048,
    baseline: Annotated[bool, typer.Option("--baseline/--no-baseline", help="also time model.generate")] = True,
    tiny: Annotated[bool, typer.Option("--tiny", help="the preset's miniature (smoke tests)")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Prefill and decode tokens/s vs the machine's roofline and plain model.generate."""
    from bench.engine import BenchConfig, run_bench

    cfg = BenchConfig(preset=check_names(preset, dtype), dtype=dtype, prefill_lengths=parse_lengths(prefill_lengths),
                      decode_tokens=decode_tokens, repeats=repeats, chunk_size=chunk_size, baseline=baseline,
                      tiny=tiny)
    report = run_bench(cfg, log=lambda msg: err_console.print(f"[dim]{msg}[/dim]"))
    if json_out:
        print_json(report)
    else:
        print_report(report)
