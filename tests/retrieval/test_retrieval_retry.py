"""A file that failed on a transient cause (a parse timeout on a busy machine) is retried by the
next ingests, at most ``MAX_ATTEMPTS`` times in all while unchanged, and the ingest says so."""

from __future__ import annotations

from pathlib import Path

from tests.retrieval.retrieval_helpers import manifest_rows

from feldspar.retrieval.ingest import MAX_ATTEMPTS

BUSY = {"parse_timeout_s": 1e-6}  # no parser answers in a microsecond: every file times out
PADDING = "\n" * 400_000  # reading and sending back 400 kB takes a parser far more than that


class Notices:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def start(self, total, label): pass
    def advance(self, n=1): pass
    def working_on(self, path): pass
    def chunks(self, written): pass

    def notice(self, message: str) -> None:
        self.seen.append(message)


def write_notes(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(2):
        (root / f"note{i}.md").write_text(f"# Note {i}\n\nGranite note {i}.\n{PADDING}")


def test_a_timed_out_file_is_retried_on_the_next_ingest(make_service, tmp_path):
    root, home = tmp_path / "corpus", tmp_path / "home"
    write_notes(root)
    first = make_service(home=home, **BUSY).ingest([root])
    assert first.failed == 2 and all("timed out" in p["reason"] for p in first.problems)

    notices = Notices()
    again = make_service(home=home).ingest([root], progress=notices)
    assert again.retried == 2 and again.indexed + again.updated == 2 and again.failed == 0
    assert any("retrying 2 file(s)" in line for line in notices.seen)
    assert {status for status, _, _ in manifest_rows(home).values()} == {"indexed"}


def test_retries_stop_after_the_cap_until_the_file_changes(make_service, tmp_path):
    root, home = tmp_path / "corpus", tmp_path / "home"
    write_notes(root)
    busy = make_service(home=home, **BUSY)
    runs = [busy.ingest([root]) for _ in range(MAX_ATTEMPTS + 1)]
    assert [run.retried for run in runs] == [0] + [2] * (MAX_ATTEMPTS - 1) + [0]
    assert runs[-1].unchanged == 2, "past the cap an unchanged file is left as it failed"
    reasons = {p["path"]: p["reason"] for p in busy.sources(status="failed")}
    assert all(f"{MAX_ATTEMPTS} attempts" in reason for reason in reasons.values())

    (root / "note0.md").write_text(f"# Note 0\n\nRewritten granite note.\n{PADDING}")
    changed = make_service(home=home).ingest([root])
    assert changed.indexed + changed.updated == 1 and changed.retried == 0
