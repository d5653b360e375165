"""The ingest progress bar fits the terminal: an 80-column one gets fewer columns, none cut short."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

ANSI = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]")


def rendered(width: int) -> list[str]:
    from feldspar.cli.retrieval import _progress_bar, _RichProgress

    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=True, color_system=None)
    with _progress_bar(console) as bar:
        progress = _RichProgress(bar)
        progress.start(250_000, "notes")
        progress.started -= 20.0  # as if 20 s in: a realistic rate (640 chunks in 20 s), not one of microseconds
        progress.working_on("projects/2026/very-long-folder-name/meeting-notes-from-the-quarterly-review.md")
        progress.advance(100_000)
        progress.chunks(640)
    lines = [ANSI.sub("", line) for line in out.getvalue().replace("\r", "\n").splitlines()]
    return [line for line in lines if line.strip()]


@pytest.mark.parametrize("width", [80, 100])
def test_a_narrow_terminal_gets_percent_chunks_and_eta_on_one_uncut_line(width):
    last = rendered(width)[-1]
    assert len(last) <= width and "…" not in last.replace("ingest notes: …", "")
    assert "40%" in last and "640 chunks" in last and "quarterly-review.md" in last


def test_a_wide_terminal_also_gets_bytes_and_rate():
    last = rendered(140)[-1]
    assert "100.0/250.0 kB" in last and "640 chunks" in last and "-notes-from-the-quarterly-review.md" in last
