"""A big file streams: its chunks are written in bounded batches as they are produced, small
files are committed before it, progress moves by bytes within it, and it is named up front."""

from __future__ import annotations

from tests.retrieval.retrieval_helpers import assert_consistent, manifest_rows

SMALL_BATCHES = {"chunk_tokens": 32, "chunk_overlap": 4, "embed_batch_size": 2}  # write batches of 8 chunks


class Recorder:
    def __init__(self, home) -> None:
        self.home, self.events, self.snapshots = home, [], []

    def start(self, total, label):
        self.events.append(("start", total))

    def advance(self, n=1):
        self.events.append(("advance", n))

    def working_on(self, path):
        self.events.append(("file", path))

    def chunks(self, written):
        self.events.append(("chunks", written))
        self.snapshots.append({p: (status, pending is None) for p, (status, _, pending) in manifest_rows(self.home).items()})

    def notice(self, message):
        self.events.append(("notice", message))


def write_corpus(root):
    root.mkdir()
    for i in range(3):
        (root / f"small{i}.md").write_text(f"# Small {i}\n\nA note on quartz number {i}.\n")
    words = "granite quartz feldspar mica basalt magma crystal mineral layer erosion sediment".split()
    (root / "big.txt").write_text("\n\n".join(" ".join(words[(p + w) % 11] for w in range(24)) + f" part {p}."
                                              for p in range(50)) + "\n")


def test_big_file_streams_in_bounded_batches_after_the_small_files(make_service, tmp_path):
    root = tmp_path / "docs"
    write_corpus(root)
    service = make_service(**SMALL_BATCHES)
    service.config.ingest.big_file_bytes = 4096
    recorder = Recorder(service.config.home)
    summary = service.ingest([root], progress=recorder)
    assert summary.indexed == 4 and summary.chunks_written >= 50
    kinds = [kind for kind, _ in recorder.events]
    files = [value for kind, value in recorder.events if kind == "file"]
    assert files == ["small0.md", "small1.md", "small2.md", "big.txt"]
    notices = [value for kind, value in recorder.events if kind == "notice"]
    assert len(notices) == 1 and notices[0].startswith("big file big.txt:") and "chunks" in notices[0]
    assert kinds.index("notice") < kinds.index("file")
    written = [value for kind, value in recorder.events if kind == "chunks"]
    steps = [b - a for a, b in zip([0] + written, written)]
    assert len(written) >= 6 and max(steps) <= 8, "chunks must be written in batches of at most 8"
    streaming = [s for s in recorder.snapshots
                 if all(s.get(f"small{i}.md") == ("indexed", True) for i in range(3)) and s.get("big.txt", (0, 1))[1] is False]
    assert len(streaming) >= 4, "the small files must be committed while the big one is still being written"
    total = next(value for kind, value in recorder.events if kind == "start")
    advanced = [value for kind, value in recorder.events if kind == "advance"]
    assert sum(advanced) == total and len([a for a in advanced if a]) >= 5, "progress must move within the big file"
    assert_consistent(service)

    with open(root / "big.txt", "a") as big:
        big.write("A new closing paragraph about obsidian.\n")
    again = Recorder(service.config.home)
    resync = service.ingest([root], progress=again)
    assert resync.updated == 1 and resync.chunks_written < 8, "unchanged chunks of the big file are not embedded again"
    assert [v for k, v in again.events if k == "notice"][0].endswith("chunks/s")  # the rate measured last time
