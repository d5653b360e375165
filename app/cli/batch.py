"""`feldspar batch` (the agent over a JSONL file of questions) and `feldspar eval answers`.

Turns flags into Settings, opens the output file before any work (agents/batch.py locks it,
repairs a torn last line and lists the ids already answered), reports malformed lines with their
numbers, takes agents from the runtime app/compose.py builds (app/runtime.py: one engine for
every collection and pack) and draws a progress bar with rate and ETA on stderr. The summary
line says how many prompt tokens were reused vs computed. Knows flags, bars and tables; nothing
of the graph.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Optional

import typer
from rich.markup import escape

from feldspar.cli.agent import PolicyOpt, _pack_defaults
from feldspar.cli.generate import DeviceOpt, DtypeOpt, MaxNewOpt, NoReuseOpt, SeedOpt, TempOpt, TopPOpt, VerboseOpt
from feldspar.cli.root import (
    RANDOM_LABEL, HomeOpt, JsonOpt, ModelOpt, app, err_console, eval_app, print_json, print_table, settings_from,
    usage_error,
)

QuestionsArg = Annotated[Path, typer.Argument(help="JSONL file: one {\"id\", \"question\"} object per line")]
CollectionOpt = Annotated[Optional[str], typer.Option("--collection", "-c", help="default collection to search")]
PackOpt = Annotated[Optional[str], typer.Option("--pack", help="default state pack to answer from")]
WorkersOpt = Annotated[int, typer.Option("--workers", min=1, help="questions at once (a remote backend only: "
                                         "the local engine serves one request at a time)")]
ApproveOpt = Annotated[Optional[Literal["always", "never"]], typer.Option(
    "--approve", help="side-effecting tools (default: never; a batch asks no questions)")]
ToolsOpt = Annotated[Optional[Path], typer.Option("--tools-module", help="Python file defining extra tools")]


def describe_error(exc: BaseException) -> str:
    from feldspar.errors import user_error_types, user_message

    return user_message(exc) if isinstance(exc, user_error_types()) else f"{type(exc).__name__}: {exc}"


def report_bad_lines(path: Path, bad: list[Any]) -> None:
    for line in bad:
        err_console.print(f"[yellow]{escape(str(path))}:{line.line}: skipped: {escape(line.reason)}[/yellow]",
                          soft_wrap=True)


def _factory(flags: dict[str, Any], pack: str | None, policy: str | None, approve: str | None, tools_module,
             no_reuse: bool):
    from feldspar.compose import build_runtime
    from feldspar.home import require_writable

    settings = settings_from(**_pack_defaults(flags, pack))
    require_writable(settings.home)  # threads and their saved states are written there
    return build_runtime(settings).agents(pack=pack, policy=policy, approve=approve or "never",
                                          tools_module=tools_module, no_reuse=no_reuse)


def choose_workers(factory, requested: int, quiet: bool) -> int:
    if requested <= 1:
        return 1
    limit = factory.max_workers()
    if requested > limit and not quiet:
        why = ("the local engine serves one request at a time, so 1 worker runs (more workers help with a remote "
               "backend that serves several)" if limit == 1 else f"the backend serves at most {limit} requests at once")
        err_console.print(f"[yellow]--workers {requested}: {why}[/yellow]", soft_wrap=True)
    return min(requested, limit)


class BatchBar:
    """A progress bar on stderr: questions done of total, rate, elapsed and ETA."""

    def __init__(self, total: int, enabled: bool, clock: Callable[[], float] = time.monotonic) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
            TimeRemainingColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                            TimeRemainingColumn(), console=err_console, disable=not enabled, get_time=clock,
                            redirect_stdout=False, redirect_stderr=False)
        self.task = self.bar.add_task("questions", total=max(total, 1), rate="")
        self.clock, self.started, self.done, self.failed = clock, clock(), 0, 0

    def __enter__(self) -> "BatchBar":
        self.bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.stop()

    def advance(self, record: dict[str, Any]) -> None:
        self.done += 1
        self.failed += bool(record.get("error"))
        elapsed = self.clock() - self.started
        rate = f"{self.done / elapsed:.2f} q/s" if elapsed > 0 else ""
        failed = f" · {self.failed} failed" if self.failed else ""
        self.bar.update(self.task, advance=1, rate=rate + failed)


def summary_line(summary, out: Path, random_weights: bool) -> str:
    share = summary.reused_tokens / summary.prompt_tokens if summary.prompt_tokens else 0.0
    random = "RANDOM WEIGHTS · " if random_weights else ""
    return (f"{random}{summary.answered} answered, {summary.failed} failed, {summary.skipped} already in {out}, "
            f"{summary.bad_lines} malformed line(s) · prompt tokens: {summary.reused_tokens:,} reused, "
            f"{summary.computed_tokens:,} computed ({share:.0%} reused) · {summary.elapsed_s:.1f} s · "
            f"{summary.workers} worker(s)")


@app.command()
def batch(
    questions: QuestionsArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="JSONL file the answers are appended to (resumable)")],
    collection: CollectionOpt = None, pack: PackOpt = None, workers: WorkersOpt = 1,
    policy: PolicyOpt = None, approve: ApproveOpt = None, tools_module: ToolsOpt = None,
    model: ModelOpt = None, max_new_tokens: MaxNewOpt = None, temperature: TempOpt = None, top_p: TopPOpt = None,
    seed: SeedOpt = None, no_reuse: NoReuseOpt = False, verbose: VerboseOpt = False, json_out: JsonOpt = False,
    device: DeviceOpt = None, dtype: DtypeOpt = None, home: HomeOpt = None,
) -> None:
    """Answer every question of a JSONL file with the agent; one JSON answer per line in --out, resumable."""
    from feldspar.agents.batch import AnswerLog
    from feldspar.cli.interrupt import on_interrupt
    from feldspar.cli.output import quiet_libraries

    quiet_libraries(verbose)
    if pack and collection:
        raise usage_error("choose --collection or --pack, not both")
    if out.expanduser().resolve() == questions.expanduser().resolve():
        raise usage_error("--out must not be the questions file")
    log = AnswerLog(out)  # before any work: an output that cannot be written stops us here
    on_interrupt(lambda: f"interrupted; {len(log.done)} answered question(s) kept in {out}; "
                         "run the same command again to answer the rest")
    try:
        items, bad = _read_batch(questions, log, out)
        flags = {"home": home, "model": model, "device": device, "dtype": dtype, "collection": collection,
                 "max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p, "seed": seed}
        factory = _factory(flags, pack, policy, approve, tools_module, no_reuse)
        records, summary = _answer_batch(items, factory, log, workers, json_out)
    finally:
        log.close()
    summary.bad_lines = len(bad)
    _report_batch(records, summary, bad, out, json_out)


def _read_batch(questions: Path, log, out: Path):
    from feldspar.agents.batch import BatchError, read_questions

    if log.torn_bytes:
        err_console.print(f"[yellow]{escape(str(out))}: removed an unfinished last line ({log.torn_bytes} bytes) "
                          f"left by an interrupted run[/yellow]", soft_wrap=True)
    items, bad = read_questions(questions)
    report_bad_lines(questions, bad)
    if not items:
        raise BatchError(f"{questions} has no usable question ({len(bad)} malformed line(s))")
    retried = sum(item.id in log.failed for item in items)
    if retried:
        err_console.print(f"retrying {retried} question(s) that failed in an earlier run (their error lines stay "
                          f"in {escape(str(out))}; the new record of each id is the one that counts)", soft_wrap=True)
    return items, bad


def _answer_batch(items, factory, log, workers: int, json_out: bool):
    from feldspar.agents.batch import run_batch

    pending = [item for item in items if item.id not in log.done]
    if pending:
        factory.check()  # a model that cannot load stops the batch here, once
    count = choose_workers(factory, workers, json_out) if pending else 1
    with BatchBar(len(pending), enabled=not json_out and bool(pending)) as bar:
        return run_batch(items, factory, log.append, done=log.done, workers=count, previous=log.records,
                         on_record=bar.advance, describe_error=describe_error)


def _report_batch(records, summary, bad, out: Path, json_out: bool) -> None:
    from feldspar.agents.batch import BatchError

    random_weights = any(r.get("random_weights") for r in records)
    if json_out:
        print_json({**summary.to_dict(), "out": str(out), "random_weights": random_weights,
                    "bad_lines": [vars(b) for b in bad]})
    else:
        if random_weights:
            err_console.print(RANDOM_LABEL, style="bold yellow", markup=False)
        err_console.print(summary_line(summary, out, random_weights), markup=False, highlight=False, soft_wrap=True)
    if records and summary.answered == 0:
        first = next(r["error"] for r in records if r.get("error"))
        raise BatchError(f"no question could be answered (each error is in its line of {out}); the first: {first}")


# ---- eval answers ---------------------------------------------------------------------------
@eval_app.command("answers")
def eval_answers_command(
    questions: Annotated[Path, typer.Argument(help="JSONL: id, question, expected_sources and/or expected_facts")],
    collection: CollectionOpt = None, pack: PackOpt = None, policy: PolicyOpt = None, tools_module: ToolsOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="also append every answer here (JSONL); "
                                                "ids already in it are scored from it, not asked again")] = None,
    model: ModelOpt = None, max_new_tokens: MaxNewOpt = None, seed: SeedOpt = None, verbose: VerboseOpt = False,
    json_out: JsonOpt = False, device: DeviceOpt = None, dtype: DtypeOpt = None, home: HomeOpt = None,
) -> None:
    """Run the agent over questions with expected sources/facts: source recall, citation precision, matches."""
    from feldspar.agents.answer_eval import evaluate_records
    from feldspar.agents.batch import AnswerLog
    from feldspar.cli.output import quiet_libraries

    quiet_libraries(verbose)
    if pack and collection:
        raise usage_error("choose --collection or --pack, not both")
    log = AnswerLog(out, keep_records=True) if out is not None else None
    flags = {"home": home, "model": model, "device": device, "dtype": dtype, "collection": collection,
             "max_new_tokens": max_new_tokens, "seed": seed, "temperature": 0.0}
    try:
        items, bad, records = _eval_records(questions, log, lambda: _factory(flags, pack, policy, "never",
                                                                             tools_module, False), json_out)
    finally:
        if log is not None:
            log.close()
    report = evaluate_records(records)
    report["bad_lines"] = [vars(b) for b in bad]
    if json_out:
        print_json(report)
        return
    _print_eval(report)


def _eval_records(questions: Path, log, make_factory, json_out: bool):
    """(items, bad lines, one answer record per item): earlier answers from ``log``, the rest asked now."""
    from feldspar.agents.answer_eval import EXPECTED_KEYS, require_expectations
    from feldspar.agents.batch import BatchError, read_questions, run_batch

    items, bad = read_questions(questions, extra_keys=EXPECTED_KEYS)
    items, unusable = require_expectations(items)
    bad = sorted(bad + unusable, key=lambda b: b.line)
    report_bad_lines(questions, bad)
    if not items:
        raise BatchError(f"{questions} has no usable question ({len(bad)} malformed line(s))")
    factory = make_factory()
    earlier = {str(r.get("id")): r for r in log.records} if log is not None else {}
    earlier = {key: r for key, r in earlier.items() if not r.get("error")}  # failed lines are asked again
    if any(item.id not in earlier for item in items):
        factory.check()
    with BatchBar(sum(item.id not in earlier for item in items), enabled=not json_out) as bar:
        new, _summary = run_batch(items, factory, log.append if log is not None else (lambda record: None),
                                  done=set(earlier), on_record=bar.advance, describe_error=describe_error)
    answered = {r["id"]: r for r in new}
    return items, bad, [answered.get(item.id) or {**earlier[item.id], **item.extra} for item in items]


def _print_eval(report: dict[str, Any]) -> None:
    rows = [{**q, **{k: _fmt(v) for k, v in q.items() if k in ("source_recall", "citation_precision", "contains")}}
            for q in report["per_question"]]
    print_table(rows, ["id", "source_recall", "citation_precision", "exact_match", "contains", "cited", "error"],
                title=f"answers over {report['questions']} questions")
    overall = [{"metric": k, "value": _fmt(v)} for k, v in report["overall"].items()]
    print_table(overall, ["metric", "value"], title="overall")
    if report.get("random_weights"):
        err_console.print(RANDOM_LABEL, style="bold yellow", markup=False)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)
