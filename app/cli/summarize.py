"""`feldspar summarize` and `feldspar extract`: whole-file workflows for scripts.

Turns flags into Settings and options, checks the command line (usage errors, exit 2),
draws a progress bar on stderr and prints one summary line (or the report with --json);
the work is app/workflows.py's. Files that could not be read are listed on stderr; output
of a random-weight checkpoint is labelled. Knows flags and reports; nothing of prompts.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Iterator, Optional

import typer
from rich.markup import escape

from feldspar.agents.configuration import SummaryMode
from feldspar.cli.generate import DeviceOpt, DtypeOpt, MaxNewOpt, SeedOpt, TempOpt, VerboseOpt
from feldspar.cli.root import (
    RANDOM_LABEL, HomeOpt, ModelOpt, app, console, err_console, print_json, settings_from, usage_error,
)

ReportOpt = Annotated[bool, typer.Option("--json", help="print the report as JSON")]
SummaryTokensOpt = Annotated[Optional[int], typer.Option("--max-new-tokens", "-n", min=1,
                                                         help="tokens per summary (default: max_new_tokens)")]
STAGE_NAMES = {"map": "summarising files", "parts": "parts of a long file", "reduce": "merging summaries",
               "summarise": "one long-context call", "prefill": "state pack prefill (tokens)", "extract": "extracting"}


@contextmanager
def stage_progress(enabled: bool = True) -> Iterator[Any]:
    """A (stage, done, total) callback drawing one bar per stage on stderr (total None: a spinner count)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=err_console, transient=True, disable=not enabled,
                   redirect_stdout=False, redirect_stderr=False)
    tasks: dict[str, int] = {}

    def report(stage: str, done: int, total: int | None) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(STAGE_NAMES.get(stage, stage), total=total)
        bar.update(tasks[stage], completed=done, total=total)

    with bar:
        yield report


def _print_skipped(skipped: list[dict[str, Any]]) -> None:
    for entry in skipped:
        err_console.print(f"[yellow]{entry['status']}[/yellow] {escape(entry['path'])}: {escape(entry['reason'])}",
                          soft_wrap=True)


@app.command()
def summarize(
    paths: Annotated[Optional[list[Path]], typer.Argument(help="files or folders: text, markdown, code, PDF, DOCX, …")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="markdown file to write (default: print it)")] = None,
    collection: Annotated[Optional[str], typer.Option("--collection", "-c", help="summarise an ingested collection")] = None,
    mode: Annotated[SummaryMode, typer.Option("--mode", help="auto: one call when all fits")] = "auto",
    focus: Annotated[Optional[str], typer.Option("--focus", help="what the summary should be about")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="recompute every file summary")] = False,
    model: ModelOpt = None, max_new_tokens: SummaryTokensOpt = None, temperature: TempOpt = None, seed: SeedOpt = None,
    device: DeviceOpt = None, dtype: DtypeOpt = None, verbose: VerboseOpt = False, json_out: ReportOpt = False,
    home: HomeOpt = None,
) -> None:
    """Summarise files (map-reduce, cached per file) or a whole collection, with citations to the files."""
    from feldspar.cli.output import quiet_libraries
    from feldspar.workflows import mode_line, summarize as run_summarize

    quiet_libraries(verbose)
    if bool(paths) == bool(collection):
        raise usage_error("give files or folders to summarise, or --collection, not both")
    settings = settings_from(home=home, model=model, device=device, dtype=dtype, max_new_tokens=max_new_tokens,
                             temperature=temperature, seed=seed)
    with stage_progress(not json_out) as progress:
        report = run_summarize(settings, paths=[str(p) for p in paths or []] or None, collection=collection, out=out,
                               progress=progress, mode=mode, focus=focus, cache=not no_cache)
    _print_skipped(report["skipped"])
    if json_out:
        print_json(report)
        return
    if out is None:
        console.print(report["markdown"], markup=False, highlight=False, end="")
    label = f"{RANDOM_LABEL} " if report["random_weights"] else ""
    target = f" → {out}" if out else ""
    tokens = f" · prompt {report['prompt_tokens']:,} tok (reused {report['reused_tokens']:,})" if report["model_calls"] else ""
    err_console.print(f"{label}summary: {mode_line(report)}{tokens}{target}", markup=False, highlight=False,
                      soft_wrap=True)


@app.command()
def extract(
    paths: Annotated[list[Path], typer.Argument(help="files or folders to extract from")],
    schema: Annotated[Path, typer.Option("--schema", help="JSON Schema file: the object each row must be")],
    out: Annotated[Path, typer.Option("--out", "-o", help="JSON Lines file; rows are appended, rows done before kept")],
    per_chunk: Annotated[bool, typer.Option("--per-chunk", help="one row per chunk instead of per file")] = False,
    retries: Annotated[int, typer.Option("--retries", min=0, max=10, help="times an invalid answer is sent back")] = 2,
    unconstrained: Annotated[bool, typer.Option("--unconstrained", help="do not constrain decoding to the schema "
                                                "(validate and retry only)")] = False,
    model: ModelOpt = None, max_new_tokens: MaxNewOpt = None, temperature: TempOpt = None, seed: SeedOpt = None,
    device: DeviceOpt = None, dtype: DtypeOpt = None, verbose: VerboseOpt = False, json_out: ReportOpt = False,
    home: HomeOpt = None,
) -> None:
    """One JSON object per file (or chunk) matching a JSON Schema: decoding is constrained to the schema
    (--unconstrained: validated, invalid answers retried, then kept)."""
    from feldspar.cli.output import quiet_libraries
    from feldspar.workflows import extract as run_extract

    quiet_libraries(verbose)
    settings = settings_from(home=home, model=model, device=device, dtype=dtype, max_new_tokens=max_new_tokens,
                             temperature=temperature, seed=seed)
    with stage_progress(not json_out) as progress:
        report = run_extract(settings, schema, [str(p) for p in paths], out, per_chunk=per_chunk, retries=retries,
                             progress=progress, constrained=not unconstrained)
    _print_skipped(report["skipped"])
    if json_out:
        print_json(report)
        return
    label = f"{RANDOM_LABEL} " if report["random_weights"] else ""
    done = f", {report['skipped_done']} done before" if report["skipped_done"] else ""
    err_console.print(f"{label}extract: {report['rows']} row(s) from {report['files']} file(s): {report['valid']} valid, "
                      f"{report['invalid']} invalid (kept with their error){done}, {report['model_calls']} model "
                      f"call(s), {'constrained' if report.get('constrained') else 'unconstrained'} → {out}", markup=False, highlight=False, soft_wrap=True)
