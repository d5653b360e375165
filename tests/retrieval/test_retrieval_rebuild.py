"""A damaged Chroma store ("database disk image is malformed") names its way out, and
``feldspar rebuild-store`` rebuilds it from the manifest and the files, same roots and paths."""

from __future__ import annotations

import json
from pathlib import Path

from tests.retrieval.retrieval_helpers import run_cli


def damage(sqlite_file: Path) -> None:
    """Overwrite part of every third page after the header: SQLite reports a malformed image."""
    size = sqlite_file.stat().st_size
    with open(sqlite_file, "r+b") as handle:
        for offset in range(4096, size, 4096 * 3):
            handle.seek(offset + 100)
            handle.write(b"\xff" * 600)


def test_damaged_store_error_names_rebuild_store_which_restores_the_index(tmp_path):
    root, home = tmp_path / "corpus", tmp_path / "home"
    (root / "nested").mkdir(parents=True)
    for i in range(3):
        (root / f"note{i}.md").write_text(f"# Note {i}\n\nGranite note {i} about quartz.\n")
    (root / "nested" / "deep.md").write_text("# Deep\n\nA nested note on feldspar.\n")
    assert run_cli("ingest", str(root), home=home).returncode == 0
    before = json.loads(run_cli("sources", "--json", home=home).stdout)
    damage(home / "chroma" / "chroma.sqlite3")

    broken = run_cli("search", "granite", home=home)
    assert broken.returncode == 1 and "Traceback" not in broken.stderr
    assert len(broken.stderr.strip().splitlines()) == 1, broken.stderr
    last = broken.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "damaged" in last and "`feldspar rebuild-store`" in last

    rebuilt = run_cli("rebuild-store", "--json", home=home)
    assert rebuilt.returncode == 0, rebuilt.stderr
    report = json.loads(rebuilt.stdout)
    assert report["collections"]["default"]["indexed"] == 4 and report["collections"]["default"]["missing"] == 0
    assert Path(report["set_aside"]).is_dir(), "the damaged store is kept aside"

    after = json.loads(run_cli("sources", "--json", home=home).stdout)
    strip = lambda rows: [(r["root"], r["path"], r["status"], r["chunks"]) for r in rows]  # noqa: E731
    assert strip(after) == strip(before)
    found = run_cli("search", "nested feldspar", "--json", home=home)
    assert found.returncode == 0 and "nested/deep.md" in found.stdout
