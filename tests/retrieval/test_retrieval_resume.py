"""Ctrl-C on a real `feldspar ingest`, and the second writer's refusal (kill -9: test_retrieval_crash).

The moment to interrupt is chosen by polling the manifest (a bounded loop) until the
ingest has committed a few files; the resumed state must be consistent and complete.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

from tests.retrieval.retrieval_helpers import assert_consistent, manifest_rows, start_cli, store_ids

SMALL_BATCHES = {"FELDSPAR_EMBED_BATCH_SIZE": "2"}


def write_files(root: Path, count: int, start: int = 0, flavour: str = "granite") -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + count):
        paragraphs = [f"Document {i} paragraph {p} about {flavour} minerals number {i * 7 + p}." for p in range(3)]
        (root / f"doc{i:03d}.md").write_text(f"# Doc {i}\n\n" + "\n\n".join(paragraphs) + "\n")


def wait_for(home: Path, condition, process, timeout: float = 180.0) -> bool:
    """Poll the manifest until ``condition(db)`` holds; False if the process ended first."""
    deadline = time.monotonic() + timeout
    path = home / "manifest.sqlite"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if path.exists():
            try:
                with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as db:
                    if condition(db):
                        return True
            except sqlite3.OperationalError:
                pass  # tables not created yet
        time.sleep(0.005)
    raise AssertionError("ingest did not reach the kill point in time")


def committed_at_least(n: int):
    return lambda db: db.execute("SELECT COUNT(*) FROM files WHERE status='indexed'").fetchone()[0] >= n


def test_ctrl_c_stops_after_the_current_batch(make_service, tmp_path):
    root = tmp_path / "corpus"
    write_files(root, 40)
    home = tmp_path / "home"
    process = start_cli("ingest", str(root), home=home, env=SMALL_BATCHES)
    try:
        assert wait_for(home, committed_at_least(4), process), "ingest ended before Ctrl-C"
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert "interrupted" in out + err and "Traceback" not in err
    rows = manifest_rows(home)
    committed = [path for path, (status, _, pending) in rows.items() if pending is None]
    assert 4 <= len(committed) < 40
    resumed = make_service(home=home)
    written_before = store_ids(resumed)
    summary = resumed.ingest([root])
    assert summary.unchanged == len(committed) and summary.indexed == 40 - len(committed)
    assert_consistent(resumed)
    assert summary.chunks_written == len(store_ids(resumed) - written_before), "written chunks embedded again"


def test_second_concurrent_cli_ingest_is_refused(tmp_path):
    from feldspar.retrieval.ingest import single_writer
    from tests.retrieval.retrieval_helpers import run_cli

    root = tmp_path / "corpus"
    write_files(root, 2)
    home = tmp_path / "home"
    with single_writer(home / "locks" / "ingest-local.lock", "held by the test"):
        result = run_cli("ingest", str(root), home=home)
    assert result.returncode == 1
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: another ingest is already writing")
    assert "one writer at a time" in message and "FELDSPAR_CHROMA_HOST" in message
    assert message.count("Chroma server") == 1 and message.count("wait") == 1, message
    assert len(message.replace(str(home / "chroma"), "")) <= 220, message  # was ~400 characters, advice twice
    assert "Traceback" not in result.stderr
