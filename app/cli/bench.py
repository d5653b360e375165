"""`feldspar bench engine`, `reuse`, `agent`, `serve` and `structured` (constrained decoding: bench/structured.py).

Parses flags into a ``bench.engine.BenchConfig``, reports progress on stderr and prints the
result as a table (or ``--json``). Knows nothing of how timings are taken or counted; see
bench/engine.py, bench/roofline.py and docs/benchmarks.md.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

import typer

from feldspar.cli.root import JsonOpt, bench_app, console, err_console, print_json, print_table

TABLE_COLUMNS = ["row", "impl", "tokens", "seconds", "tokens/s", "achieved", "% of roofline", "vs baseline",
                 "vs feldspar"]
QUALITY_COLUMNS = ["impl", "weights MiB", "max |Δlogit|", "mean |Δlogit|", "greedy agreement"]
QUANT_CHOICES = ("none", "int8", "int4")


Impl = Literal["fast", "ref", "both"]  # --decode-step and --prefill; both: fast then ref
IMPLS: dict[str, tuple[str, ...]] = {"fast": ("fast",), "ref": ("ref",), "both": ("fast", "ref")}


def parse_quants(text: str) -> tuple[str, ...]:
    """"int8,int4" -> ("int8", "int4"); "" or "none" -> ()."""
    quants = tuple(part for part in text.replace(" ", "").split(",") if part and part != "none")
    bad = [q for q in quants if q not in QUANT_CHOICES]
    if bad:
        raise typer.BadParameter(f"{bad[0]!r} is not one of {', '.join(QUANT_CHOICES)}", param_hint="--quants")
    return quants


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
    from feldspar.model.catalog import get_spec
    from feldspar.model.presets import resolve_dtype

    try:
        resolve_dtype(dtype)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--dtype") from None
    return get_spec(preset).name


def table_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for r in sorted(report["rows"], key=lambda r: (r["kind"] != "decode", r["row"])):
        measured = r["achieved"] is not None
        rows.append({
            "row": r["row"], "impl": r["impl"], "tokens": r["tokens"], "seconds": f"{r['seconds']:.2f}",
            "tokens/s": f"{r['tokens_per_s']:.1f}",
            "achieved": f"{r['achieved']:.1f} {r['achieved_unit']}" if measured else "",
            "% of roofline": f"{r['roofline_pct']:.1f}%" if measured else "",
            "vs baseline": "" if r["vs_baseline"] is None else f"{r['vs_baseline']:.2f}x",
            "vs feldspar": "" if r.get("vs_feldspar") is None else f"{r['vs_feldspar']:.2f}x",
        })
    return rows


def quality_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"impl": q["impl"], "weights MiB": f"{q['weight_bytes'] / 2**20:.0f}",
             "max |Δlogit|": f"{q['max_logit_diff']:.4f}", "mean |Δlogit|": f"{q['mean_logit_diff']:.5f}",
             "greedy agreement": f"{100 * q['greedy_agreement']:.1f}%"} for q in report.get("quality", [])]


def print_report(report: dict[str, Any]) -> None:
    machine = report["machine"]
    title = f"{report['preset']}{' (tiny)' if report['tiny'] else ''}, {report['dtype']}, random weights"
    console.print(f"CPU: {report.get('cpu') or 'unknown'}; flags: {' '.join(report.get('cpu_flags', [])) or 'none'}",
                  highlight=False)
    print_table(table_rows(report), TABLE_COLUMNS, title=title)
    console.print(
        f"roofline: matmul {machine['matmul_gflops']:.1f} GFLOP/s ({machine['dtype']}), "
        f"memory {machine['bandwidth_gbs']:.1f} GB/s, {machine['threads']} threads; "
        f"prefill % is of matmul FLOP/s, decode % of bandwidth; vs baseline = Feldspar tokens/s "
        f"over model.generate tokens/s; vs feldspar = over the {report['dtype']} Feldspar row; "
        f"{report['elapsed_s']:.0f} s in all"
    )
    if report.get("quality"):
        positions = report["quality"][0]["positions"]
        print_table(quality_rows(report), QUALITY_COLUMNS,
                    title=f"quality vs fp32 over {positions} teacher-forced positions (random weights: "
                          f"says the kernels are close, not how a trained model degrades)")


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
    quants: Annotated[str, typer.Option("--quants", help="quantisations timed beside the base, comma-separated "
                                        "(none: only the base)")] = "int8,int4",
    quality_tokens: Annotated[int, typer.Option("--quality-tokens", min=2, help="positions compared with fp32")]
    = 256,
    peer_urls: Annotated[Optional[list[str]], typer.Option("--peer-url", help="a running llama.cpp server, "
                                                           "URL or LABEL=URL (e.g. q8_0=http://127.0.0.1:8081): "
                                                           "adds its rows; repeatable")] = None,
    decode_step: Annotated[Impl, typer.Option("--decode-step", help="fast (fused step), ref (transformers' "
                                             "forward) or both, side by side")] = "fast",
    prefill_impl: Annotated[Impl, typer.Option("--prefill", help="fast (Feldspar's Mamba2 scan), ref "
                                              "(transformers') or both, interleaved")] = "fast",
    compile: Annotated[bool, typer.Option("--compile/--no-compile", help="also time the torch.compile'd decode "
                                          "step and prefill scan (compilation reported apart)")] = True,
    json_out: JsonOpt = False,
) -> None:
    """Prefill and decode tokens/s vs the machine's roofline and plain model.generate."""
    from feldspar.bench.engine import BenchConfig, run_bench
    from feldspar.bench.peer import PeerError

    cfg = BenchConfig(preset=check_names(preset, dtype), dtype=dtype, prefill_lengths=parse_lengths(prefill_lengths),
                      decode_tokens=decode_tokens, repeats=repeats, chunk_size=chunk_size, baseline=baseline,
                      tiny=tiny, quants=parse_quants(quants), quality_tokens=quality_tokens,
                      peer_urls=tuple(peer_urls or ()),
                      decode_steps=IMPLS[decode_step], prefills=IMPLS[prefill_impl], compile=compile)
    run_and_print(run_bench, cfg, PeerError, print_report, json_out)


def run_and_print(run, cfg, errors, printer, json_out: bool) -> None:
    """Run a benchmark with dim progress lines; its ``errors`` are one line and exit 1; print JSON or tables."""
    try:
        report = run(cfg, log=lambda msg: err_console.print(f"[dim]{msg}[/dim]"))
    except errors as exc:
        err_console.print(f"error: {exc}", highlight=False, markup=False)
        raise typer.Exit(1) from None
    if json_out:
        print_json(report)
    else:
        printer(report)


def print_reuse_report(report: dict[str, Any]) -> None:
    from feldspar.bench.reuse import ratio_rows as reuse_rows

    cfg = report["config"]
    columns = list(reuse_rows(report)[0]) if report["rows"] else []
    print_table(reuse_rows(report), columns, title=f"{cfg['preset']}{' (tiny)' if cfg['tiny'] else ''} fp32 CPU, follow-up of {cfg['new_tokens']} tokens")
    sizes = report["sizes"]
    console.print(f"state: Mamba {sizes['mamba_state_bytes'] / 2**20:.1f} MiB fixed + KV "
                  f"{sizes['kv_bytes_per_1k_tokens'] / 2**20:.2f} MiB per 1K tokens (fp32); bf16: "
                  f"{sizes['bf16_mamba_state_bytes'] / 2**20:.1f} MiB + {sizes['bf16_kv_bytes_per_1k_tokens'] / 2**20:.2f} MiB/1K")
    for long_run in (report.get("long_context"), report.get("peak_run")):
        if not long_run:
            continue
        label = "tiny preset" if long_run["tiny"] else long_run["preset"]
        console.print(f"{label}, {long_run['tokens']:,} tokens: prefill {long_run['prefill_s']:.1f} s, follow-up "
                      f"{long_run['follow_up_s']:.3f} s, peak RSS {long_run['peak_rss_bytes'] / 2**20:.0f} MiB "
                      f"({long_run['peak_over_model_bytes'] / 2**20:.0f} MiB over the loaded model)")
    console.print(f"{report['threads']} threads, {report['elapsed_s']:.0f} s in all")


# ---- bench reuse -----------------------------------------------------------------------
@bench_app.command("reuse")
def bench_reuse(
    preset: Annotated[str, typer.Option("--preset", help="catalog model built with random weights")]
    = "granite-4.0-h-350m",
    contexts: Annotated[str, typer.Option("--contexts", help="context lengths, comma-separated")] = "2048,8192,32768",
    pack_contexts: Annotated[Optional[str], typer.Option("--pack-contexts", help="lengths for pack reload vs re-prefill (default: contexts >= 8192)")] = None,
    new_tokens: Annotated[int, typer.Option("--new-tokens", min=1, help="tokens in the follow-up question")] = 30,
    tiny_context: Annotated[int, typer.Option("--tiny-context", min=0, help="long-context run on the tiny preset (0: skip)")] = 131072,
    peak_context: Annotated[int, typer.Option("--peak-context", min=0, help="also prefill the preset to this length in a child process and record peak memory (0: skip)")] = 0,
    baseline: Annotated[bool, typer.Option("--baseline/--no-baseline", help="time (a), the model.generate recompute")] = True,
    chunk_size: Annotated[int, typer.Option("--chunk-size", min=16, help="prefill chunk (tokens)")] = 2048,
    tiny: Annotated[bool, typer.Option("--tiny", help="main rows on the preset's miniature (smoke runs)")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Time to first token of a follow-up: recompute vs Feldspar reuse vs the bare forward; packs; state bytes."""
    from feldspar.bench.reuse import ReuseBenchConfig, run_reuse_bench

    lengths = parse_lengths(contexts)
    packs = parse_lengths(pack_contexts) if pack_contexts else tuple(n for n in lengths if n >= 8192)
    cfg = ReuseBenchConfig(preset=check_names(preset, "float32"), contexts=lengths, pack_contexts=packs,
                           new_tokens=new_tokens, tiny_context=tiny_context, peak_context=peak_context,
                           chunk_size=chunk_size, baseline=baseline, tiny=tiny)
    report = run_reuse_bench(cfg, log=lambda msg: err_console.print(f"[dim]{msg}[/dim]"))
    if json_out:
        print_json(report)
    else:
        print_reuse_report(report)


# ---- bench agent -----------------------------------------------------------------------
@bench_app.command("agent")
def bench_agent(
    preset: Annotated[str, typer.Option("--preset", help="catalog model built with random weights")]
    = "granite-4.0-h-350m",
    turns: Annotated[int, typer.Option("--turns", min=2, max=6, help="questions in the thread")] = 5,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1, help="answer length per turn")] = 16,
    tiny: Annotated[bool, typer.Option("--tiny", help="the preset's miniature (smoke runs)")] = False,
    json_out: JsonOpt = False,
) -> None:
    """A multi-turn agent thread over the docs with retrieval: per-turn tokens and TTFT, reuse vs none."""
    import tempfile
    from pathlib import Path

    from feldspar.bench.agent import run_agent_bench, table_rows
    from feldspar.cli.retrieval import REPO_DOCS
    from feldspar.cli.root import settings_from
    from feldspar.compose import build_runtime
    from feldspar.model.checkpoint_random import write_random_checkpoint

    log = lambda msg: err_console.print(f"[dim]{msg}[/dim]")  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="feldspar-bench-agent-") as temp:
        log(f"writing {check_names(preset, 'float32')} with random weights{' (tiny)' if tiny else ''} …")
        checkpoint = write_random_checkpoint(preset, Path(temp) / "model", tiny=tiny, seed=0, allow_large=True)
        settings = settings_from(home=Path(temp) / "home", model=str(checkpoint), device="cpu", dtype="float32",
                                 collection="docs", max_new_tokens=max_new_tokens, temperature=0.0)
        log(f"ingesting {REPO_DOCS} …")
        runtime = build_runtime(settings)
        runtime.retrieval().ingest([REPO_DOCS])
        agents = {"reuse": runtime.agent(approve="never", threads=False),
                  "recompute": runtime.agent(approve="never", threads=False, no_reuse=True)}
        report = run_agent_bench(agents, turns=turns, log=log)
    report.update(preset=preset, tiny=tiny, max_new_tokens=max_new_tokens)
    if json_out:
        print_json(report)
        return
    print_table(table_rows(report), list(table_rows(report)[0]), title=f"{preset}{' (tiny)' if tiny else ''}, "
                "random weights, fp32 CPU: agent thread with retrieval over docs/")
    met = {True: "met", False: "MISSED", None: "no follow-up reached 4K tokens"}[report["met"]]
    console.print(f"goal: follow-up TTFT >= 10x faster than recomputing at 4K+ tokens: {met}; "
                  f"{report['elapsed_s']:.0f} s in all")


# ---- bench serve -----------------------------------------------------------------------
def serve_target(label: str, preset: str, tiny: bool, queue: int, max_new_tokens: int, log):
    """A factory for bench/serve.py: a random-weight checkpoint served on a loopback port."""
    from contextlib import contextmanager

    @contextmanager
    def start():
        import tempfile
        from pathlib import Path

        from feldspar.cli.root import settings_from
        from feldspar.serve.server import build_server
        from feldspar.model.checkpoint_random import write_random_checkpoint
        from feldspar.serve.run import serve_in_thread

        with tempfile.TemporaryDirectory(prefix="feldspar-bench-serve-") as temp:
            log(f"{label}: writing {preset} with random weights{' (tiny)' if tiny else ''} …")
            checkpoint = write_random_checkpoint(preset, Path(temp) / "model", tiny=tiny, seed=0, allow_large=True)
            settings = settings_from(home=Path(temp) / "home", model=str(checkpoint), device="cpu", dtype="float32",
                                     max_new_tokens=max_new_tokens, temperature=0.0)
            app = build_server(settings, agent=False, queue=queue)
            (model_id,) = app.state.feldspar.models
            with serve_in_thread(app) as url:
                yield url, model_id

    return start


@bench_app.command("serve")
def bench_serve(
    presets: Annotated[str, typer.Option("--preset", help="comma-separated: tiny (the h-350m miniature) and/or "
                                         "catalog models at their real shape, e.g. tiny,h-350m")] = "tiny",
    clients: Annotated[int, typer.Option("--clients", min=1, max=64, help="concurrent clients")] = 4,
    requests: Annotated[int, typer.Option("--requests", min=1, max=10_000, help="requests per preset")] = 32,
    queue: Annotated[int, typer.Option("--queue", min=0, help="server queue (waiting requests before 429)")] = 8,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1, help="tokens per answer")] = 8,
    json_out: JsonOpt = False,
) -> None:
    """N concurrent OpenAI clients with a shared system prompt against `feldspar serve` on loopback."""
    from feldspar.bench.serve import ServeBenchConfig, run_serve_bench, table_rows as serve_rows

    log = lambda msg: err_console.print(f"[dim]{msg}[/dim]")  # noqa: E731
    targets = {}
    for name in (p.strip() for p in presets.split(",") if p.strip()):
        tiny = name == "tiny"
        preset = check_names("granite-4.0-h-350m" if tiny else name, "float32")
        targets[f"{preset} (tiny)" if tiny else preset] = serve_target(name, preset, tiny, queue, max_new_tokens, log)
    if not targets:
        raise typer.BadParameter("name at least one preset", param_hint="--preset")
    cfg = ServeBenchConfig(clients=clients, requests=requests, max_new_tokens=max_new_tokens)
    report = run_serve_bench(targets, cfg, log=log)
    report.update(queue=queue)
    if json_out:
        print_json(report)
        return
    print_table(serve_rows(report), list(serve_rows(report)[0]), title=f"feldspar serve on loopback, random weights, "
                f"fp32 CPU: {clients} clients, {requests} requests, queue {queue}, {max_new_tokens} new tokens")
    console.print(f"TTFT: request sent -> first text; reused: prompt tokens resumed from saved state; 429s: refused "
                  f"beyond the queue (not retried); {report['elapsed_s']:.0f} s in all")


# ---- bench structured -------------------------------------------------------------------
def structured_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    v, e = report["validity"], report["extract"]
    rows = [{"measure": f"schema-valid outputs, {mode} (miniature, sampled)", "value": f"{v[mode]['valid']}/"
             f"{v[mode]['outputs']} ({100 * v[mode]['share']:.0f} %)"} for mode in ("constrained", "free")]
    for d in report["decode"]:
        shape, c = f"{d['shape']} ({d['vocab']:,} vocab)", d["step_costs"]
        rows += [
            {"measure": f"decode s/token free vs constrained, {shape}", "value": f"{d['free_s_per_token'] * 1000:.2f} ms vs "
             f"{d['constrained_s_per_token'] * 1000:.2f} ms ({100 * d['slowdown']:+.1f} %)"},
            {"measure": f"decode s/token constrained, mask in line (no overlap), {shape}",
             "value": f"{d['in_line_s_per_token'] * 1000:.2f} ms"},
            {"measure": f"mask + advance alone per token, {shape}", "value": f"{d['mask_s_per_token'] * 1e6:.0f} us"},
            {"measure": f"one in-line decode, per token: forward / mask / apply+pick / advance, {shape}",
             "value": " / ".join(f"{c[k] * 1000:.2f}" for k in ("forward", "mask", "apply_pick", "advance"))
             + f" ms ({c['steps']} tokens)"},
            {"measure": f"compile 50-property schema, {shape}", "value": f"{d['compile_50_properties_s'] * 1000:.1f} ms "
             f"(tokenizer view once: {d['tokenizer_view_s']:.2f} s)"},
        ]
    rows += [{"measure": f"extract rows valid first try, {mode}", "value": f"{e[mode]['valid_first_try']}/{e[mode]['rows']} "
              f"(valid after retries {e[mode]['valid']}, {e[mode]['model_calls']} model calls)"} for mode in ("constrained", "retry")]
    return rows


@bench_app.command("structured")
def bench_structured(
    preset: Annotated[str, typer.Option("--preset", help="catalog model built with random weights")]
    = "granite-4.0-h-350m",
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="sampled outputs per schema (validity rows)")] = 3,
    decode_tokens: Annotated[int, typer.Option("--decode-tokens", min=2, help="tokens per timing run")] = 48,
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="timed runs per row; the best counts")] = 2,
    tiny: Annotated[bool, typer.Option("--tiny", help="the miniature only (smoke runs)")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Constrained decoding: schema-valid share, per-token slowdown, compile time, extract first-try rows."""
    from feldspar.bench.structured import StructuredBenchConfig, cpu_flags, run_structured_bench

    cfg = StructuredBenchConfig(preset=check_names(preset, "float32"), seeds=seeds, decode_tokens=decode_tokens,
                                repeats=repeats, full=not tiny)
    report = run_structured_bench(cfg, log=lambda msg: err_console.print(f"[dim]{msg}[/dim]"))
    report["cpu_flags"] = cpu_flags()
    if json_out:
        print_json(report)
        return
    print_table(structured_rows(report), ["measure", "value"], title=f"{cfg.preset}, random weights, fp32 CPU")
    console.print(f"CPU flags: {report['cpu_flags']}; {report['elapsed_s']:.0f} s in all")
