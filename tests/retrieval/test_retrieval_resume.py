"""Crash safety: a real `feldspar ingest` killed with SIGKILL (or Ctrl-C) converges on re-run.

The killed runs are real subprocesses; the moment to kill is chosen by polling the
manifest (a bounded loop) until the ingest has reached the wanted point. The final state
must equal a clean run's: the same manifest rows and exactly their chunk ids in Chroma.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

from retrieval_helpers import assert_consistent, manifest_rows, start_cli, store_ids

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


def any_row(db) -> bool:
    return db.execute("SELECT COUNT(*) FROM files").fetchone()[0] > 0


def committed_at_least(n: int):
    return lambda db: db.execute("SELECT COUNT(*) FROM files WHERE status='indexed'").fetchone()[0] >= n


def generation_above(value: int):
    return lambda db: (db.execute("SELECT MAX(generation) FROM collections").fetchone()[0] or 0) > value


def kill_at(root: Path, home: Path, condition) -> None:
    process = start_cli("ingest", str(root), home=home, env=SMALL_BATCHES)
    try:
        reached = wait_for(home, condition, process)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(30)
        process.stdout.close()
        process.stderr.close()
    assert reached, "the ingest finished before the kill point; the test corpus is too small"


def state(service) -> dict:
    return {path: (status, ids) for path, (status, ids, _) in manifest_rows(service.config.home).items()}


def assert_resume_matches_a_clean_run(make_service, root, home, clean_home):
    """Re-running ingest on a killed home ends exactly where a clean run does."""
    resumed = make_service(home=home)
    resumed.ingest([root])
    clean = make_service(home=clean_home)
    clean.ingest([root])
    assert state(resumed) == state(clean)
    assert store_ids(resumed) == store_ids(clean)
    assert_consistent(resumed)


def test_ingest_killed_at_several_points_converges_to_a_clean_run(make_service, tmp_path):
    root = tmp_path / "corpus"
    write_files(root, 30)
    home = tmp_path / "killed-home"
    for condition in (any_row, committed_at_least(6), committed_at_least(16)):
        kill_at(root, home, condition)
    assert_resume_matches_a_clean_run(make_service, root, home, tmp_path / "clean-home")


def test_sync_killed_midway_converges(make_service, tmp_path):
    root = tmp_path / "corpus"
    write_files(root, 30)
    home = tmp_path / "home"
    first = make_service(home=home)
    first.ingest([root])
    generation = first.manifest.generation("default")
    first.close()
    for i in range(0, 10):
        (root / f"doc{i:03d}.md").unlink()
    write_files(root, 10, start=10, flavour="basalt")
    write_files(root, 10, start=30, flavour="obsidian")
    kill_at(root, home, generation_above(generation + 2))
    assert_resume_matches_a_clean_run(make_service, root, home, tmp_path / "clean-home")


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
    assert 4 <= len(rows) < 40 and all(pending is None for _, _, pending in rows.values())
    resumed = make_service(home=home)
    summary = resumed.ingest([root])
    assert summary.unchanged == len(rows) and summary.indexed == 40 - len(rows)
    assert_consistent(resumed)


def test_second_concurrent_cli_ingest_is_refused(tmp_path):
    from feldspar.retrieval.ingest import single_writer
    from retrieval_helpers import run_cli

    root = tmp_path / "corpus"
    write_files(root, 2)
    home = tmp_path / "home"
    with single_writer(home / "locks" / "ingest-local.lock", "held by the test"):
        result = run_cli("ingest", str(root), home=home)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: another ingest is already writing")
    assert "Traceback" not in result.stderr
