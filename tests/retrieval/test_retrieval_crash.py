"""kill -9 at 20 named points: every kill lands in its window, every resume equals a clean run.

Each kill is a real process (forked from a warm helper, ``crash_zygote``) that SIGKILLs
itself at a named step of the ingest (``feldspar.retrieval.crashpoints``), starting from a
copy of a known state. Before re-running, the test proves where it died: the process
ended by SIGKILL, and the store and manifest are in the state of that window (announced
ids present and not written, written and not committed, stale ids deleted and not
committed, …), so the recovery path runs every time. The corpus has a big file that
streams over several write batches (tiny chunks, batches of 8); the phases are a first
ingest, a change/delete/add sync, and a reindex (resumed by running it again).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tests.retrieval.retrieval_helpers import REPO, assert_consistent, manifest_rows

from feldspar.retrieval.reindex import staging_name

SETTINGS = {"chunk_tokens": 32, "chunk_overlap": 4, "embed_batch_size": 2}  # write batches of 8 chunks
WORDS = "granite quartz feldspar mica basalt magma crystal mineral layer erosion sediment fault mantle".split()

FIRST_INGEST = [("announced", 1), ("part_upserted", 2), ("upserted", 1), ("deleted", 1), ("committed", 1),
                ("announced", 3), ("part_upserted", 11), ("upserted", 3), ("upserted", 5), ("deleted", 2)]
SYNC = [("pruned", 1), ("announced", 1), ("part_upserted", 1), ("upserted", 1), ("deleted", 1),
        ("committed", 1), ("upserted", 6), ("deleted", 2)]  # batch 6 holds the big file's changed end
REINDEX = [("swap_dropped", 1), ("upserted", 2)]  # the switch, and the build beside the old one


def write_corpus(root: Path, version: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(5):
        (root / f"small{i}.md").write_text(f"# Small {i}\n\nNote {i} on {WORDS[i]} and {WORDS[i + 1]}.\n")
    paragraphs = [" ".join(WORDS[(p * 7 + w) % len(WORDS)] for w in range(22)) + f" paragraph {p}."
                  for p in range(40)]
    (root / "big.txt").write_text("\n\n".join(paragraphs) + "\n")
    if version == 2:  # change one small file and the big file's end, delete two, add two
        (root / "small1.md").write_text("# Small 1\n\nRewritten: obsidian and pumice.\n")
        with open(root / "big.txt", "a") as big:
            big.write("\n\n".join(f"Appended paragraph {p} about lava and ash." for p in range(12)) + "\n")
        (root / "small3.md").unlink()
        (root / "small4.md").unlink()
        (root / "new0.md").write_text("# New 0\n\nA new note on pyroxene.\n")
        (root / "new1.md").write_text("# New 1\n\nA new note on olivine.\n")


class Zygote:
    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, str(Path(__file__).parent / "crash_zygote.py")], cwd=REPO,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ingest(self, home: Path, root: Path, point: str = "", nth: int = 1, reindex: bool = False) -> dict:
        request = {"home": str(home), "root": str(root), "point": point, "nth": nth, "reindex": reindex,
                   "settings": SETTINGS}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(30)
        self.process.stdout.close()


@pytest.fixture(scope="module")
def zygote():
    helper = Zygote()
    yield helper
    helper.close()


def state(home: Path) -> dict:
    return {path: (status, ids) for path, (status, ids, _) in manifest_rows(home).items()}


def look(service, collection: str = "default") -> dict:
    """Manifest rows and the ids in the store (None when the collection does not exist)."""
    rows = {p: (s, set(json.loads(ids)), None if pending is None else set(json.loads(pending)))
            for p, (s, ids, pending) in manifest_rows(service.config.home, collection).items()}
    if service.store.recorded(collection) is None:
        return {"rows": rows, "store": None}
    chunks = service.store.open(collection, service.embedder.name, create=False)
    return {"rows": rows, "store": {i for ids, _, _ in chunks.iterate() for i in ids}}


def assert_in_window(point: str, seen: dict, base: dict) -> None:
    """The kill landed where ``point`` says: the state needs the recovery path."""
    rows, store = seen["rows"], seen["store"]
    pending = {p: r for p, r in rows.items() if r[2] is not None}
    if point == "swap_dropped":
        assert store is None and rows, "old collection dropped, its manifest rows still there"
        return
    if point == "pruned":
        gone = [p for p, (_, ids, _) in rows.items() if ids and not ids & store]
        assert gone and set(gone) - set(pending), "deleted files' chunks removed, their rows not yet forgotten"
        return
    assert pending, f"{point}: no announced (pending) row to recover"
    announced = set().union(*(r[2] for r in pending.values()))
    written_uncommitted = {i for _, ids, ids_pending in pending.values() for i in ids_pending - ids} & store
    if point == "announced":
        assert announced - store, "announced ids must not be written yet"
    elif point in ("part_upserted", "upserted"):
        assert written_uncommitted, "written chunks must not be committed yet"
    elif point == "deleted":
        assert announced <= store | {i for _, ids, _ in pending.values() for i in ids}
        stale_gone = {i for _, ids, _ in pending.values() for i in ids} - store
        assert stale_gone or written_uncommitted, "stale ids deleted (or new ids written) before the commit"
    elif point == "committed":
        committed_now = [p for p, r in rows.items() if r[2] is None and base["rows"].get(p, (None, None))[:2] != r[:2]]
        assert committed_now, "a batch was committed in this run"


def run_phase(zygote, make_service, tmp_path: Path, name: str, base_home: Path, root: Path, points, clean: dict,
              reindex: bool = False) -> None:
    for number, (point, nth) in enumerate(points):
        home = tmp_path / f"{name}-{number}-{point}-{nth}"
        if base_home.exists():
            shutil.copytree(base_home, home)
        base = {"rows": {p: (s, set(json.loads(ids)), pending) for p, (s, ids, pending) in manifest_rows(home).items()}}
        ended = zygote.ingest(home, root, point, nth, reindex=reindex)
        assert ended["signal"] == signal.SIGKILL, f"{name} {point}:{nth} did not die there: {ended}"
        building = reindex and not point.startswith("swap_")  # killed while the new index was built beside
        seen = look(make_service(home=home, **SETTINGS), staging_name("default") if building else "default")
        assert_in_window(point, seen, base)
        if building:
            assert look(make_service(home=home, **SETTINGS))["store"] == clean["store"], "old index intact"
        resumed = make_service(home=home, **SETTINGS)
        summary = resumed.ingest([root], reindex=reindex)  # the same command again
        assert state(home) == clean["state"], f"{name} {point}:{nth}"
        assert summary.chunks_written == len(clean["store"] - (seen["store"] or set())), "written chunks embedded again"
        assert look(resumed)["store"] == clean["store"]
        assert_consistent(resumed)


def test_kill_at_20_points_lands_in_its_window_and_resumes_to_a_clean_run(zygote, make_service, tmp_path):
    assert len(FIRST_INGEST) + len(SYNC) + len(REINDEX) == 20
    first_root, sync_root = tmp_path / "corpus-a", tmp_path / "corpus-b"
    write_corpus(first_root, 1)
    write_corpus(sync_root, 1)
    clean_first, synced_base = tmp_path / "clean-a", tmp_path / "base-b"
    assert zygote.ingest(clean_first, first_root) == {"signal": None, "code": 0}
    assert zygote.ingest(synced_base, sync_root) == {"signal": None, "code": 0}
    clean = {"state": state(clean_first), "store": look(make_service(home=clean_first, **SETTINGS))["store"]}
    big_chunks = len(json.loads(manifest_rows(clean_first)["big.txt"][1]))
    assert big_chunks >= 40, "the big file must stream over at least 5 write batches"

    run_phase(zygote, make_service, tmp_path, "first", tmp_path / "no-base", first_root, FIRST_INGEST, clean)
    run_phase(zygote, make_service, tmp_path, "reindex", clean_first, first_root, REINDEX, clean, reindex=True)

    write_corpus(sync_root, 2)
    clean_sync_home = tmp_path / "clean-b"
    assert zygote.ingest(clean_sync_home, sync_root) == {"signal": None, "code": 0}
    clean_sync = {"state": state(clean_sync_home),
                  "store": look(make_service(home=clean_sync_home, **SETTINGS))["store"]}
    run_phase(zygote, make_service, tmp_path, "sync", synced_base, sync_root, SYNC, clean_sync)
