"""Retrieval commands: ingest, search, sources, collections, rebuild-store, eval retrieval, bench retrieval.

Knows flags, progress bars, tables and JSON; checks the data home is writable, then builds
the service through the composition root. Bad flag values are usage errors (exit 2); a
missing collection or file is a RetrievalError (exit 1). Knows nothing of how files are
parsed, stored or searched. ``demo_retrieval`` is the `make demo` step.
"""

from __future__ import annotations

import time
import textwrap
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
                           TransferSpeedColumn)
from rich.text import Text

from feldspar.cli.output import quiet_libraries
from feldspar.cli.root import HomeOpt, JsonOpt, app, bench_app, cell, console, err_console, eval_app, print_json
from feldspar.cli.root import print_table, settings_from, short_paths, usage_error
from feldspar.retrieval.manifest import FileStatus
from feldspar.settings import Settings

CollectionOpt = Annotated[Optional[str], typer.Option("--collection", "-c", help="collection (corpus) name")]
EmbeddingOpt = Annotated[Optional[str], typer.Option("--embedding-model", help="sentence-transformers model id or path")]
REPO_DOCS = Path(__file__).resolve().parents[2] / "docs"
DEMO_QUERY = "How does hybrid search combine BM25 and vector similarity?"
NOT_INDEXED = ("skipped", "failed")
PASSAGE_CHARS = 240


def _service(home: Path | None, collection: str | None = None, embedding_model: str | None = None,
             verbose: bool = False):
    from feldspar.compose import build_retrieval
    from feldspar.home import require_writable

    settings = settings_from(home=home, collection=collection, embedding_model=embedding_model)
    require_writable(settings.home)  # the manifest, Chroma and caches all write there
    service = build_retrieval(settings, library_warnings=verbose)
    service.announce = lambda message: err_console.print(message, style="dim", highlight=False)
    return service


class _RichProgress:
    """Adapts the ingest progress protocol (retrieval/progress.py) to a rich bar: bytes done, the
    file being read, chunks embedded and their rate (after every embedding batch), and an ETA; notices (big files up front) print above it."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = None
        self.label = ""
        self.started = time.perf_counter()

    def start(self, total: int, label: str) -> None:
        self.label = f"ingest {label}"
        self.started = time.perf_counter()
        self.task = self.progress.add_task(self.label, total=max(total, 1), chunks="0 chunks")

    def advance(self, n: int = 1) -> None:
        if self.task is not None:
            self.progress.advance(self.task, n)

    def working_on(self, path: str) -> None:
        if self.task is not None:
            room = 40 if self.progress.console.width >= WIDE else 20
            shown = path if len(path) <= room else "…" + path[-(room - 1):]
            self.progress.update(self.task, description=f"{self.label}: {shown}")

    def chunks(self, written: int) -> None:
        self.embedded(written)

    def embedded(self, chunks: int) -> None:
        if self.task is not None:
            rate = chunks / max(time.perf_counter() - self.started, 1e-9)
            self.progress.update(self.task, chunks=f"{chunks:,} chunks, {rate:.1f}/s")

    def stage(self, text: str) -> None:  # the bar appears with the first root's total; its label says the rest
        pass

    def files(self, parsed: int, total: int, bytes_read: int) -> None:
        pass

    def notice(self, message: str) -> None:
        self.progress.console.print(message)


WIDE = 120  # columns from which the bar also shows bytes, bytes/s and the elapsed time


def _progress_bar(out: Console) -> Progress:
    if out.width < WIDE:  # an 80-column terminal: fewer columns rather than every one cut short
        return Progress(TextColumn("{task.description}"), BarColumn(bar_width=10),
                        TextColumn("{task.percentage:>3.0f}%"), TextColumn("{task.fields[chunks]}"),
                        TimeRemainingColumn(), console=out, transient=False)
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TextColumn("{task.fields[chunks]}"), TimeRemainingColumn(), TimeElapsedColumn(),
                    console=out, transient=False)


def not_indexed(service, paths: list[Path]) -> list[dict]:
    """Skipped and failed files under ``paths`` as the manifest records them (this run or earlier)."""
    import os

    targets = [os.path.realpath(Path(p).expanduser()) for p in paths]
    rows = []
    for row in service.sources():
        full = os.path.join(row["root"], row["path"])
        if row["status"] in NOT_INDEXED and any(full == t or full.startswith(t.rstrip(os.sep) + os.sep) for t in targets):
            rows.append({"path": row["path"], "status": row["status"], "reason": row["reason"]})
    return rows


def _print_summary(summary, problems: list[dict], reasons: bool, out: Console) -> None:
    counts = summary.counts()
    out.print(" · ".join(f"{name} {value}" for name, value in counts.items())
              + f" · {summary.chunks_written} chunks written in {summary.seconds:.1f}s")
    if summary.retried:
        out.print(f"retried {summary.retried} file(s) that failed on a transient cause last time")
    if reasons and problems:
        print_table(problems, ["path", "status", "reason"], title="not indexed")
    elif problems:
        out.print(f"{len(problems)} file(s) not indexed; --reasons lists why")
    if summary.interrupted:
        out.print("interrupted after the current batch; run the same command again to resume")


@app.command("ingest")
def ingest_command(
    paths: Annotated[list[Path], typer.Argument(help="folders or files to index")],
    collection: CollectionOpt = None,
    prune: Annotated[bool, typer.Option("--prune/--no-prune", help="remove files gone from the same root")] = True,
    reindex: Annotated[bool, typer.Option("--reindex", help="index from scratch beside the old collection; it switches when complete")] = False,
    reasons: Annotated[bool, typer.Option("--reasons", help="list skipped/failed files with reasons")] = False,
    embedding_model: EmbeddingOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="also show the parsers' library warnings")] = False,
    json_out: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Index folders into a collection; re-running syncs only what changed."""
    quiet_libraries(verbose)
    service = _service(home, collection, embedding_model, verbose=verbose)
    with _progress_bar(err_console) as bar:
        summary = service.ingest(paths, prune=prune, reindex=reindex, progress=_RichProgress(bar))
    problems = not_indexed(service, paths)
    if json_out:
        print_json({**summary.counts(), "chunks_written": summary.chunks_written, "interrupted": summary.interrupted,
                    "retried": summary.retried, "seconds": round(summary.seconds, 3), "problems": summary.problems,
                    "not_indexed": problems})
    else:
        _print_summary(summary, problems, reasons, console)
    if summary.interrupted:
        raise typer.Exit(130)


def print_hits(hits, out: Console) -> None:
    """Each hit as its path, a line of where in the file (page, span, score, heading), then the passage."""
    if not hits:
        out.print("no results")
        return
    indent, width = "    ", max(out.width - 4, 20)
    for rank, hit in enumerate(hits, start=1):
        out.print(Text(f"{rank:>2}. ", style="bold") + Text.assemble(cell(hit.path), style="bold"), overflow="fold")
        details = [f"p. {hit.page}"] if hit.page else []
        details += [f"chars {hit.start}-{hit.end}", f"score {hit.score:.4f}"] + ([hit.heading] if hit.heading else [])
        out.print(Text(indent) + Text.assemble(cell(" · ".join(details)), style="dim"), overflow="ellipsis",
                  no_wrap=True)
        passage = " ".join(hit.text.split())
        passage = passage if len(passage) <= PASSAGE_CHARS else passage[:PASSAGE_CHARS - 1] + "…"
        for line in textwrap.wrap(passage, width):
            out.print(Text(indent) + cell(line))


@app.command("search")
def search_command(
    query: Annotated[str, typer.Argument(help="what to look for")],
    k: Annotated[int, typer.Option("-k", help="number of results", min=1)] = 5,
    collection: CollectionOpt = None,
    path_glob: Annotated[Optional[str], typer.Option("--path", help="only paths matching this glob")] = None,
    file_type: Annotated[Optional[list[str]], typer.Option("--type", help="only this file type (repeatable)")] = None,
    embedding_model: EmbeddingOpt = None,
    json_out: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Hybrid (vector + BM25) search with citations: path, page, character span, heading."""
    if not query.strip():
        raise usage_error("the search query is empty: give some words to look for")
    _check_file_types(file_type)
    hits = _service(home, collection, embedding_model).search(query, k, path_glob=path_glob, file_types=file_type)
    if json_out:
        print_json([hit.to_dict() for hit in hits])
    else:
        print_hits(hits, console)


def _check_file_types(file_types: list[str] | None) -> None:
    from feldspar.retrieval.loaders import file_kind

    for name in file_types or []:
        if file_kind("x." + name.lower().lstrip(".")) is None:
            raise usage_error(f"--type {name!r} is not a file type Feldspar reads (an extension: md, pdf, py, txt …)")


@app.command("sources")
def sources_command(
    collection: CollectionOpt = None,
    status: Annotated[Optional[FileStatus], typer.Option("--status", help="only files with this status")] = None,
    json_out: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Files known to a collection, with status and reason."""
    service = _service(home, collection)
    rows = service.sources(status=status)
    if not rows:
        _require_collection(service, collection)
    if json_out:
        print_json(rows)
    else:
        room = max(30, console.width - 50)  # the other columns keep their room in an 80-column terminal
        for row, shown in zip(rows, short_paths([str(r.get("path") or "") for r in rows], room)):
            row["path"] = shown
        print_table(rows, ["path", "status", "chunks", "size", "reason", "root"], whole=("path",))


def _require_collection(service, collection: str | None) -> None:
    """Raise the same error as `search` when a collection was never ingested."""
    from feldspar.retrieval.errors import UnknownCollection

    name = collection or service.config.collection
    if service.sources(name) or service.store.model_of(name) is not None:
        return
    raise UnknownCollection(f"no collection {name!r} in {service.store.location.label}", fix="ingest_first",
                            collection=name)


@app.command("collections")
def collections_command(json_out: JsonOpt = False, home: HomeOpt = None) -> None:
    """Collections in the store with their embedding model, chunk and file counts."""
    rows = _service(home).collections()
    if json_out:
        print_json(rows)
    else:
        table = [{**row, "files": ", ".join(f"{k} {v}" for k, v in sorted(row["files"].items()))} for row in rows]
        print_table(table, ["name", "embedding_model", "embedding_precision", "chunks", "files"])


@app.command("rebuild-store")
def rebuild_store_command(json_out: JsonOpt = False, home: HomeOpt = None) -> None:
    """Rebuild a damaged local Chroma store from the manifest and the source files (old store kept aside)."""
    service = _service(home)
    with _progress_bar(err_console) as bar:
        report = service.rebuild_store(progress=_RichProgress(bar))
    if json_out:
        print_json(report)
        return
    if report["set_aside"]:
        console.print(f"damaged store moved aside to {report['set_aside']}")
    for name, counts in report["collections"].items():
        console.print(f"{name}: " + " · ".join(f"{key} {value}" for key, value in counts.items()))


@eval_app.command("retrieval")
def eval_retrieval_command(
    questions: Annotated[Path, typer.Argument(help="JSONL: question, path, optional page")],
    collection: CollectionOpt = None,
    against: Annotated[Optional[str], typer.Option(
        "--against", help="compare with another collection, or settings such as 'rrf_k=20,chunk_context=none'")] = None,
    show_misses: Annotated[bool, typer.Option("--show-misses", help="list questions not answered at rank 1")] = False,
    json_out: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Recall@1/5/10, MRR and nDCG@10 of search over a questions file; --against compares two side by side."""
    from feldspar.retrieval.evaluation import METRICS, compare, evaluate, load_questions, misses

    asked = load_questions(questions)
    service = _service(home, collection)
    report = evaluate(asked, lambda q, k: service.search(q, k))
    if against is None:
        if json_out:
            print_json(report)
            return
        print_table([{"metric": m, "value": report[m]} for m in METRICS], ["metric", "value"],
                    title=f"retrieval over {report['questions']} questions")
        if show_misses:
            print_table(misses(report), ["rank", "path", "question"], title="not at rank 1 (no rank: not in the top 10)")
        return
    other = _against_service(home, collection, against)
    result = compare(report, evaluate(asked, lambda q, k: other.search(q, k)))
    if json_out:
        print_json(result)
        return
    print_table(result["metrics"], ["metric", "left", "right", "change"],
                title=f"{collection or 'default'} (left) vs {against} (right), {result['questions']} questions")
    if show_misses:
        print_table(result["moved"], ["left", "right", "path", "question"], title="questions whose rank moved")


def _against_service(home: Path | None, collection: str | None, against: str):
    """Another collection (a name), or the same one searched with other settings (``key=value,...``)."""
    from feldspar.compose import build_retrieval

    if "=" not in against:
        return _service(home, against)
    overrides = {}
    for pair in against.split(","):
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise usage_error(f"--against: expected a collection or key=value pairs, got {pair!r}")
        overrides[key.strip()] = value.strip()
    unknown = sorted(set(overrides) - set(Settings.model_fields))
    if unknown:
        raise usage_error(f"--against: unknown setting {unknown[0]!r}")
    return build_retrieval(settings_from(home=home, collection=collection, **overrides))


@bench_app.command("retrieval")
def bench_retrieval_command(
    json_out: JsonOpt = False,
    search_chunks: Annotated[int, typer.Option("--search-chunks", min=1, help="chunks for the latency test")] = 100_000,
    sync_files: Annotated[int, typer.Option("--sync-files", min=1, help="files for the re-sync test")] = 10_000,
    big_file_mb: Annotated[float, typer.Option("--big-file-mb", min=0, help="size of the big streamed file; 0 skips")] = 50.0,
    big_file_seconds: Annotated[float, typer.Option("--big-file-seconds", min=0, help="ingest it this long, then Ctrl-C")] = 60.0,
    precision: Annotated[bool, typer.Option("--precision/--no-precision", help="fp32 vs int8 rows")] = True,
    basics: Annotated[bool, typer.Option("--basics/--no-basics", help="throughput, re-sync and latency rows")] = True,
    ingest_files: Annotated[int, typer.Option("--ingest-files", min=1, help="files for the throughput test")] = 300,
    quality: Annotated[bool, typer.Option("--quality/--no-quality", help="recall/MRR before vs now")] = False,
) -> None:
    """Ingest throughput, re-sync, search latency; fp32 vs int8; a big file, Ctrl-C, searches during a write."""
    import sys

    from feldspar.bench.retrieval import run_benchmark

    from feldspar.compose import build_retrieval

    settings = settings_from()

    def make_service(home, collection, precision=None, **overrides):
        update = {**overrides, "home": home, "collection": collection, "chroma_host": None}
        if precision:
            update["embed_precision"] = precision
        return build_retrieval(settings.model_copy(update=update))

    rows = run_benchmark(make_service, search_chunks=search_chunks, sync_files=sync_files,
                         log=None if json_out else err_console.print, docs=REPO_DOCS,
                         ingest_command=[sys.executable, "-m", "feldspar", "ingest"], big_file_mb=big_file_mb,
                         big_file_seconds=big_file_seconds, precision=precision, basics=basics,
                         ingest_files=ingest_files, quality=quality)
    if json_out:
        print_json(rows)
    else:
        print_table(rows, ["measure", "value", "target", "met", "note"], title="retrieval benchmark")


def demo_retrieval(settings: Settings, console: Console) -> None:
    """Ingest the repository's docs folder into the "docs" collection and run one search."""
    from feldspar.compose import build_retrieval

    service = build_retrieval(settings.model_copy(update={"collection": "docs"}))
    console.print(f"[bold]Ingesting {REPO_DOCS} into collection 'docs'[/bold]")
    with _progress_bar(console) as bar:
        summary = service.ingest([REPO_DOCS], progress=_RichProgress(bar))
    _print_summary(summary, not_indexed(service, [REPO_DOCS]), reasons=False, out=console)
    console.print(f"[bold]Search:[/bold] {DEMO_QUERY}")
    print_hits(service.search(DEMO_QUERY, k=3), console)
    service.close()
