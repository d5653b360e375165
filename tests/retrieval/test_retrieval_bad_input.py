"""Bad input during an ingest: each file gets one status with a reason, the run goes on,
nothing committed is lost.

Files that grow, shrink or vanish while being read are changed from the progress hook
``working_on`` (called after a file is parsed, before its chunks are written); a full
disk is a child process whose file-size limit (RLIMIT_FSIZE) stops the store's database
from growing; a huge one-line file streams through the chunker's windows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.retrieval.retrieval_helpers import REPO, assert_consistent, manifest_rows, store_ids

from feldspar.retrieval.chunking import WINDOW_CHARS, Chunker
from feldspar.retrieval.loaders import Extracted


class Meddler:
    """A progress sink that does something to a file when the ingest starts working on it."""

    def __init__(self, target: str, action) -> None:
        self.target, self.action = target, action

    def start(self, total, label): pass
    def advance(self, n=1): pass
    def chunks(self, written): pass
    def notice(self, message): pass

    def working_on(self, path: str) -> None:
        if path == self.target:
            self.action()


def corpus(root: Path) -> Path:
    root.mkdir(parents=True)
    for i in range(3):
        (root / f"keep{i}.md").write_text(f"# Keep {i}\n\nGranite note {i} about quartz.\n")
    (root / "moving.txt").write_text("Basalt is a volcanic rock. " * 40)
    return root


def reasons(summary) -> dict[str, tuple[str, str]]:
    return {p["path"]: (p["status"], p["reason"]) for p in summary.problems}


def test_files_that_grow_shrink_or_vanish_while_read(service, tmp_path):
    root = corpus(tmp_path / "docs")
    target = root / "moving.txt"
    cases = [("grows", lambda: target.write_text(target.read_text() + "More lava. " * 50), "changed while being read"),
             ("shrinks", lambda: target.write_text("Short now."), "changed while being read"),
             ("vanishes", lambda: target.unlink(), "deleted while being read")]
    for name, action, reason in cases:
        if not target.exists():
            target.write_text("Basalt is a volcanic rock. " * 40)
        summary = service.ingest([root], progress=Meddler("moving.txt", action))
        status, why = reasons(summary)["moving.txt"]
        assert status == "failed" and reason in why, (name, why)
        assert manifest_rows(service.config.home)["moving.txt"][:2] == ("failed", "[]"), name
        assert {"keep0.md", "keep1.md", "keep2.md"} <= {p for p, r in manifest_rows(service.config.home).items()
                                                        if r[0] == "indexed"}
        assert_consistent(service)
    again = service.ingest([root])  # the vanished file is pruned; nothing else moves
    assert again.removed == 1 and again.unchanged == 3
    target.write_text("Basalt again.")
    assert service.ingest([root]).indexed == 1
    assert_consistent(service)


FULL_DISK = """
import json, os, resource, signal, sys
from feldspar.compose import build_retrieval
from feldspar.settings import load_settings

def main():
    home, root, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    summary = build_retrieval(load_settings(home=home)).ingest([root])
    print(json.dumps({"counts": summary.counts(), "problems": summary.problems}))

if __name__ == "__main__":
    main()
"""


def test_a_full_disk_fails_the_files_it_cannot_write_and_keeps_what_was_committed(make_service, tmp_path):
    root, home = corpus(tmp_path / "docs"), tmp_path / "home"
    first = make_service(home=home)
    first.ingest([root])
    committed = store_ids(first)
    first.close()
    for i in range(12):
        (root / f"new{i}.md").write_text(f"# New {i}\n\n" + f"Obsidian and pumice paragraph {i}. " * 60)
    database = max((p for p in (home / "chroma").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    script = tmp_path / "full_disk.py"
    script.write_text(FULL_DISK)
    limit = database.stat().st_size + 16 * 1024
    result = subprocess.run([sys.executable, str(script), str(home), str(root), str(limit)], cwd=REPO,
                            capture_output=True, text=True, timeout=600,
                            env={**os.environ, "FELDSPAR_HOME": str(home), "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    failed = {p["path"]: p["reason"] for p in report["problems"] if p["status"] == "failed"}
    assert failed and all(reason.startswith("cannot write to the store") for reason in failed.values())
    assert report["counts"]["unchanged"] == 4
    after = make_service(home=home)
    assert committed <= store_ids(after), "chunks committed before the disk filled up were lost"
    assert {p for p, r in manifest_rows(home).items() if r[0] == "indexed" and r[2] is None} >= {
        "keep0.md", "keep1.md", "keep2.md", "moving.txt"}
    summary = after.ingest([root])  # space again: the same command finishes the job
    assert summary.failed == 0 and summary.indexed + summary.updated == 12
    assert_consistent(after)


def test_a_huge_one_line_file_streams_in_windows(embedder):
    line = " ".join(f"word{i % 977}" for i in range(400_000))  # about 3.6 MB, no newline
    chunker = Chunker(embedder.token_len, 64, 8)
    chunks = chunker.iter_chunks(Extracted(line))
    first = [next(chunks) for _ in range(40)]
    assert all(line[c.start:c.end] == c.text for c in first)
    assert first[-1].end < 2 * WINDOW_CHARS, "chunks must come before the whole line is split"
    no_spaces = "x" * (3 * WINDOW_CHARS)
    pieces = list(chunker.iter_chunks(Extracted(no_spaces)))
    assert pieces and all(no_spaces[c.start:c.end] == c.text for c in pieces)


def test_one_line_and_whitespace_files_in_an_ingest(service, tmp_path):
    root = tmp_path / "docs"
    root.mkdir()
    (root / "one-line.txt").write_text(" ".join(f"granite{i}" for i in range(3000)))
    (root / "blank.md").write_text(" \n\t\n   \n")
    (root / "ok.md").write_text("# Fine\n\nQuartz.\n")
    summary = service.ingest([root])
    assert summary.indexed == 2 and reasons(summary) == {"blank.md": ("skipped", "only whitespace, no text")}
    assert_consistent(service)
