"""`feldspar bench retrieval` at scale: fp32 vs int8, a big streamed file, Ctrl-C, reads during a write.

(1) Precision: the same real chunk texts embedded by the fp32 and int8 embedders in
alternating rounds (so load from other processes hits both alike), chunks/s of each;
recall@5 and MRR of each on docs/eval (the repository's docs) and on a larger real corpus
shipped with Python itself (the language reference topics of ``pydoc_data``, questions
made from sentences of each topic, seeded). (2) A big generated text file ingested by a
real ``feldspar ingest`` subprocess: time to the first chunk in the store, chunks/s and
peak RSS (beside the peak RSS of a small-file ingest), then Ctrl-C: seconds from SIGINT
to exit. (3) While that ingest writes, 32 concurrent searches (threads in this process,
and separate processes) on the same store: p95 and errors. A benchmark, not a test: it
reports numbers and asserts nothing. The caller passes service factories and the ingest
command, so this module knows no settings or CLI.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

import numpy as np

from feldspar.retrieval.evaluation import Question, evaluate, load_questions

MakeService = Callable[..., object]  # (home, collection, precision=None) -> a retrieval service


def _row(measure: str, value: float, unit: str, target: str, met: bool | None, note: str = "") -> dict:
    shown = f"{value:.1f} {unit}" if value >= 10 else f"{value:.3g} {unit}"
    return {"measure": measure, "value": shown, "raw": round(value, 4), "target": target,
            "met": "-" if met is None else ("yes" if met else "NO"), "note": note}


# ---- (1) precision ---------------------------------------------------------------------
def python_reference_corpus(folder: Path, per_topic: int = 2, seed: int = 13) -> list[Question]:
    """The pydoc topics as text files, and questions: sentences picked from each topic."""
    from pydoc_data.topics import topics

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    questions = []
    for name, text in sorted(topics.items()):
        path = f"{name}.txt"
        (folder / path).write_text(text, encoding="utf-8")
        sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", " ".join(text.split()))
                     if 8 <= len(s.split()) <= 30]
        for sentence in rng.sample(sentences, min(per_topic, len(sentences))):
            questions.append(Question(sentence, path))
    return questions


def bench_precision(make_service: MakeService, home: Path, docs: Path, docs_questions: Path,
                    rounds: int = 3, log: Callable[[str], None] = print) -> list[dict]:
    reference = python_reference_corpus(home / "pyref")
    docs_copy = home / "docs"  # the documents only: not the questions file beside them
    docs_copy.mkdir(parents=True)
    for page in docs.glob("*.md"):
        shutil.copy2(page, docs_copy / page.name)
    sets = {"docs/eval": (docs_copy, load_questions(docs_questions)), "python reference": (home / "pyref", reference)}
    services = {p: make_service(home / p, "bench-precision", precision=p) for p in ("fp32", "int8")}
    quality: dict[str, dict[str, dict]] = {}
    for precision, service in services.items():
        for label, (folder, questions) in sets.items():
            log(f"  {precision}: ingest + evaluate {label} …")
            service.ingest([folder], collection=f"q-{label.replace('/', '-').replace(' ', '-')}")
            quality.setdefault(precision, {})[label] = evaluate(
                questions, lambda q, k: service.search(q, k, collection=f"q-{label.replace('/', '-').replace(' ', '-')}"))
    texts = _sample_chunks(services["int8"], "q-python-reference", 128)
    speed = _interleaved_speed({p: s.embedder for p, s in services.items()}, texts, rounds)
    rows = []
    ratio = speed["int8"] / speed["fp32"]
    for precision in ("fp32", "int8"):
        rows.append(_row(f"embed chunks/s, {precision}", speed[precision], "chunks/s", "-", None,
                         f"{len(texts)} real chunks x {rounds} interleaved rounds"))
    rows.append(_row("int8 speed-up over fp32", ratio, "x", ">= 2x", ratio >= 2.0, "same chunks, same run"))
    for label, (_, questions) in sets.items():
        for metric in ("recall@5", "mrr"):
            values = {p: quality[p][label][metric] for p in ("fp32", "int8")}
            gap = values["fp32"] - values["int8"]
            for precision, value in values.items():
                rows.append(_row(f"{metric} {label}, {precision}", value, "", "-", None, f"{len(questions)} questions"))
            rows.append(_row(f"{metric} {label}, fp32 - int8", gap, "", "<= 0.01", gap <= 0.01, "hybrid search"))
    return rows


def _sample_chunks(service, collection: str, n: int) -> list[str]:
    texts = [t for _, page, _ in service.store.open(collection, service.embedder.name, create=False).iterate()
             for t in page]
    random.Random(3).shuffle(texts)
    return texts[:n]


def _interleaved_speed(embedders: dict, texts: list[str], rounds: int) -> dict[str, float]:
    seconds = dict.fromkeys(embedders, 0.0)
    for embedder in embedders.values():
        embedder.embed(texts[:8])  # warm up
    for _ in range(rounds):
        for precision, embedder in embedders.items():
            started = time.perf_counter()
            embedder.embed(texts)
            seconds[precision] += time.perf_counter() - started
    return {p: rounds * len(texts) / s for p, s in seconds.items()}


# ---- (2) + (3) big file, Ctrl-C, reads during a write ----------------------------------
def write_big_file(path: Path, megabytes: float, seed: int = 5) -> None:
    rng = random.Random(seed)
    words = ("granite quartz feldspar mica basalt magma crystal mineral rock layer erosion sediment "
             "pressure heat fault plate mantle crust lava ash pumice obsidian").split()
    target = int(megabytes * 1_000_000)  # decimal MB: 50 MB stays under the 50 MiB default cap
    with open(path, "w", encoding="utf-8") as out:
        written = 0
        while written < target:
            paragraph = " ".join(rng.choice(words) for _ in range(rng.randint(40, 120))) + ".\n\n"
            out.write(paragraph)
            written += len(paragraph)


def _peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _run_ingest(command: list[str], home: Path, folder: Path, env: dict) -> subprocess.Popen:
    environment = {**os.environ, "FELDSPAR_HOME": str(home), **env}
    return subprocess.Popen([*command, str(folder), "--json"], env=environment, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)


def bench_small_ingest_rss(command: list[str], home: Path) -> float:
    folder = home / "small"
    folder.mkdir(parents=True)
    for i in range(20):
        (folder / f"note{i}.md").write_text(f"# Note {i}\n\nGranite and quartz, note number {i}.\n")
    process = _run_ingest(command, home, folder, {})
    peak = 0.0
    while process.poll() is None:
        peak = max(peak, _peak_rss_mb(process.pid))
        time.sleep(0.05)
    return peak


def bench_big_file(make_service: MakeService, command: list[str], home: Path, megabytes: float,
                   run_seconds: float, log: Callable[[str], None] = print) -> list[dict]:
    folder = home / "big"
    folder.mkdir(parents=True)
    write_big_file(folder / "big.txt", megabytes)
    log("  small-file ingest for the RSS baseline …")
    small_rss = bench_small_ingest_rss(command, home / "small-home")
    reader = make_service(home / "home", "default")
    searchers = SearchProcesses(command[0], home / "home", 4, 8).start()
    process = _run_ingest(command, home / "home", folder, {})
    started = time.perf_counter()
    first_chunk, peak = None, 0.0
    while process.poll() is None and first_chunk is None:
        peak = max(peak, _peak_rss_mb(process.pid))
        if _count(reader) > 0:
            first_chunk = time.perf_counter() - started
        time.sleep(0.2)
    log("  searches during the write …")
    rows = bench_reads_during_write(reader, searchers, process)
    while process.poll() is None and time.perf_counter() - started < run_seconds:
        peak = max(peak, _peak_rss_mb(process.pid))
        time.sleep(0.5)
    written_at, count = time.perf_counter(), _count(reader)
    peak = max(peak, _peak_rss_mb(process.pid))
    process.send_signal(signal.SIGINT)
    process.wait()
    stop_seconds = time.perf_counter() - written_at
    rate = count / max(1e-9, written_at - started - (first_chunk or 0.0))
    note = f"{megabytes:g} MB text file, run {run_seconds:g} s then Ctrl-C"
    return [
        _row("big file: time to first chunk in the store", first_chunk or float("nan"), "s", "-", None, note),
        _row("big file: chunks/s after the first", rate, "chunks/s", "-", None, f"{count} chunks"),
        _row("big file: peak RSS of the ingest", peak, "MB", f"<= small + 300 MB ({small_rss:.0f} MB)",
             peak <= small_rss + 300, "small = 20 small files, same command"),
        _row("Ctrl-C to exit", stop_seconds, "s", "<= 5 s", stop_seconds <= 5.0, f"exit code {process.returncode}"),
    ] + rows


def _count(service) -> int:
    try:
        return service.store.open("default", service.embedder.name, create=False).count()
    except Exception:
        return 0


def bench_reads_during_write(service, searchers: "SearchProcesses", writer: subprocess.Popen,
                             concurrent: int = 32) -> list[dict]:
    from concurrent.futures import ThreadPoolExecutor

    queries = [f"granite quartz layer {i}" for i in range(concurrent)]

    def one(query: str) -> tuple[float, str | None]:
        started = time.perf_counter()
        try:
            service.search(query, k=5)
            return 1000 * (time.perf_counter() - started), None
        except Exception as exc:  # counted, reported
            return 1000 * (time.perf_counter() - started), f"{type(exc).__name__}: {exc}"

    with ThreadPoolExecutor(concurrent) as pool:
        results = list(pool.map(one, queries))
    thread_ms = [ms for ms, _ in results]
    thread_errors = [e for _, e in results if e]
    writing = writer.poll() is None
    proc = _summary(searchers.go())
    processes = searchers.processes
    return [
        _row(f"search p95, {concurrent} threads during a write", float(np.percentile(thread_ms, 95)), "ms", "-",
             None, f"{len(thread_errors)} errors, {len(results) - len(thread_errors)} answered, writer running: {writing}"
             + (f"; first error: {thread_errors[0][:200]}" if thread_errors else "")),
        _row(f"search p95, {processes} processes x {searchers.threads} threads during a write",
             proc.get("p95_ms", float("nan")), "ms", "-", None,
             f"{proc.get('errors', '?')} errors, {proc.get('answered', 0)} answered"),
    ]


SEARCH_SCRIPT = """
import json, sys, time
from concurrent.futures import ThreadPoolExecutor
from feldspar.compose import build_retrieval
from feldspar.settings import load_settings
service = build_retrieval(load_settings(home=sys.argv[1]))
service.embedder.load()
def one(i):
    started = time.perf_counter()
    try:
        service.search(f"quartz basalt {i}", k=5)
        return 1000 * (time.perf_counter() - started), None
    except Exception as exc:
        return 1000 * (time.perf_counter() - started), repr(exc)
print("ready", flush=True)
sys.stdin.readline()
with ThreadPoolExecutor(int(sys.argv[2])) as pool:
    results = list(pool.map(one, range(int(sys.argv[2]))))
print(json.dumps(results), flush=True)
"""


class SearchProcesses:
    """Separate searcher processes on one data home: ``start`` loads them, ``go`` fires all searches
    at once (``threads`` each) and returns ``[(ms, error or None), ...]``."""

    def __init__(self, python: str, home: Path, processes: int, threads: int) -> None:
        self.python, self.home, self.processes, self.threads = python, home, processes, threads
        self.children: list[subprocess.Popen] = []

    def start(self) -> "SearchProcesses":
        self.children = [subprocess.Popen([self.python, "-c", SEARCH_SCRIPT, str(self.home), str(self.threads)],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                          text=True) for _ in range(self.processes)]
        for child in self.children:
            child.stdout.readline()  # "ready": imports done, model loaded
        return self

    def go(self) -> list[tuple[float, str | None]]:
        for child in self.children:
            child.stdin.write("go\n")
            child.stdin.flush()
        results: list[tuple[float, str | None]] = []
        for child in self.children:
            line = child.stdout.readline()
            child.wait()
            child.stdin.close()
            child.stdout.close()
            results += [tuple(r) for r in json.loads(line)] if line.strip() else [(float("nan"), "no answer")] * self.threads
        return results


def _summary(results: list[tuple[float, str | None]]) -> dict:
    ms = [r[0] for r in results]
    return {"p95_ms": float(np.percentile(ms, 95)), "errors": sum(1 for r in results if r[1]),
            "answered": sum(1 for r in results if not r[1])}
