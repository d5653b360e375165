"""An ingest job's live progress and last line, for the web UI's Documents page.

``IngestProgress`` implements the retrieval layer's progress protocol (retrieval/progress.py)
into a ``Job``: what the run does now (its phase), files parsed of those to index and bytes
read, bytes indexed (the bar) and chunks embedded, all from the run's first second;
tests hold a job at its checkpoints ``parsed`` (a file's parse came back), ``embedded`` (an
embedding batch was stored) and ``batch`` (a batch of files was committed).
``ingest_words`` is the job's last line: the same chunk count the progress showed, and what
the collection now holds (the count its table shows). Knows jobs; nothing of Streamlit.
"""

from __future__ import annotations

from typing import Any

from feldspar.webui.jobs import Job


class IngestProgress:
    """The retrieval layer's ingest progress protocol (retrieval/progress.py), reported into a Job:
    the stage, files parsed and bytes read, bytes indexed and chunks embedded, live."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self._before = (0, 0, 0)  # files done, files to do, bytes read by the roots before this one

    def stage(self, text: str) -> None:
        self.job.update(phase=text)

    def start(self, total: int, label: str) -> None:
        self.job.update(total=self.job.view().total + total)

    def files(self, parsed: int, total: int, bytes_read: int) -> None:
        if parsed == 0:  # a new root
            view = self.job.view()
            self._before = (view.files_done, view.files_total, view.bytes_read)
        done, todo, read = self._before
        self.job.update(files_done=done + parsed, files_total=todo + total, bytes_read=read + bytes_read)
        if parsed:
            self.job.checkpoint("parsed")

    def embedded(self, chunks: int) -> None:
        self.job.update(chunks=chunks)
        self.job.checkpoint("embedded")

    def advance(self, n: int = 1) -> None:
        self.job.advance(n)

    def working_on(self, path: str) -> None:
        self.job.update(current=path)

    def chunks(self, written: int) -> None:
        self.job.update(chunks=written)
        self.job.checkpoint("batch")

    def notice(self, message: str) -> None:
        self.job.notice(message)


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def ingest_words(what: str, summary: Any, held: int | None) -> str:
    """An ingest's last line: its file counts, the chunks it embedded (the count its progress showed)
    and what the collection now holds (the count its table shows), or how it was cancelled."""
    counts = " · ".join(f"{k} {v:,}" for k, v in summary.counts().items() if v)
    embedded = f"{_plural(summary.chunks_written, 'chunk')} embedded"
    holds = f"; the collection holds {_plural(held, 'chunk')}" if held is not None else ""
    if summary.interrupted:
        return f"cancelled: {counts or 'no file finished'} · {embedded} (kept){holds}; ingest again to resume"
    return f"{what}: {counts or 'nothing changed'} · {embedded} in {summary.seconds:.1f} s{holds}"
