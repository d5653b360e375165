"""The web UI library (app/webui: library, jobs, uploads): upload names, allowed roots, one ingest at a time."""

from __future__ import annotations

import os
import sys
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from tests.ui.library_fixtures import WAIT_S, allowed, gate, make_library, write_corpus  # noqa: F401

from feldspar.webui.jobs import Refused
from feldspar.webui.uploads import BAD_CATEGORIES, allowed_folder, safe_upload_name

NASTY = "/\\.\x00\n\r\t\u202e\u200b\u2028:~$ *?é" + "abcXYZ09_-"
SEGMENTS = ["a", "b", ".hidden", "link_out", "link_in", "link_hidden", "..", ".", "outside", "missing", "a/../.."]


# ---- upload names --------------------------------------------------------------------------
@hsettings(max_examples=400, deadline=None)
@given(st.one_of(st.text(alphabet=NASTY, max_size=30), st.text(max_size=260)))
def test_an_accepted_upload_name_is_one_plain_file_inside_its_folder(name):
    base = Path("/srv/uploads/docs")
    try:
        clean = safe_upload_name(name)
    except Refused as exc:
        assert str(exc)
        return
    assert clean and "/" not in clean and "\\" not in clean and "\x00" not in clean
    assert not clean.startswith(".") and Path(clean).name == clean
    assert os.path.normpath(base / clean) == str(base / clean) and (base / clean).parent == base
    assert not any(unicodedata.category(ch) in BAD_CATEGORIES for ch in clean)
    assert len(clean.encode("utf-8")) <= 200 and safe_upload_name(clean) == clean


@pytest.mark.parametrize("name", ["report 2024.pdf", "Ünïcode notes.md", "a.b.c.txt", "Makefile", "x..y.md"])
def test_ordinary_names_pass_unchanged(name):
    assert safe_upload_name(name) == unicodedata.normalize("NFC", name)


@pytest.mark.parametrize("name", ["../etc/passwd", "..", ".", ".bashrc", "a/b.md", "C:evil.md", "dir\\x.md",
                                  "x\u202emd.exe", "new\nline.md", "", "   "])
def test_path_like_hidden_and_invisible_names_are_refused(name):
    with pytest.raises(Refused):
        safe_upload_name(name)


# ---- allowed roots -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    base = tmp_path_factory.mktemp("roots")
    root, outside = base / "allowed", base / "outside"
    for folder in (root / "a" / "deep", root / "b", root / ".hidden" / "inner", outside / "x"):
        folder.mkdir(parents=True)
    (root / "link_out").symlink_to(outside)
    (root / "link_in").symlink_to(root / "a")
    (root / "link_hidden").symlink_to(root / ".hidden")
    (root / "a" / "file.md").write_text("hi", encoding="utf-8")
    return base, root


@hsettings(max_examples=300, deadline=None)
@given(start=st.sampled_from(["allowed", ""]), parts=st.lists(st.sampled_from(SEGMENTS), max_size=5))
def test_only_real_paths_inside_a_root_and_not_hidden_are_accepted(tree, start, parts):
    base, root = tree
    candidate = os.path.join(base, start, *parts)
    real, real_root = Path(os.path.realpath(candidate)), Path(os.path.realpath(root))
    inside = real == real_root or real.is_relative_to(real_root)
    visible = inside and not any(p.startswith(".") for p in real.relative_to(real_root).parts)
    try:
        accepted = allowed_folder(candidate, [root])
    except Refused as exc:
        assert not (visible and real.exists()), f"{candidate} refused: {exc}"
        if not inside:
            assert "outside" in str(exc) and "ui_allowed_roots" in str(exc)
        return
    assert visible and accepted == real and accepted.exists()


def test_outside_paths_are_refused_without_saying_whether_they_exist(tree):
    base, root = tree
    for candidate in (base / "outside", base / "nothing-here"):
        with pytest.raises(Refused, match="outside the folders"):
            allowed_folder(str(candidate), [root])


# ---- one ingest at a time, refusals while it runs ------------------------------------------
def test_a_second_ingest_and_deleting_the_busy_collection_are_refused(make_library, allowed, gate):
    library = make_library()
    write_corpus(allowed / "notes", 8)
    gate.armed = True
    assert library.ingest_folder("default", str(allowed / "notes")).ok
    assert gate.reached.wait(WAIT_S)
    try:
        second = library.ingest_folder("default", str(allowed / "notes"))
        assert not second.ok and "already running" in second.message
        busy = library.delete_collection("default")
        assert not busy.ok and "is running" in busy.message
        assert library.ingest_job().active
    finally:
        gate.release.set()
    assert library.wait(WAIT_S) and library.ingest_job().state == "done"
    assert {row["status"] for row in library.sources("default")} == {"indexed"}
    assert library.cancel_ingest().ok is False


def test_resync_reads_changes_and_skips_roots_outside_the_allowed_ones(make_library, allowed, tmp_path):
    library = make_library()
    write_corpus(allowed / "notes", 2)
    outside = tmp_path / "cli-only"
    write_corpus(outside, 1)
    library.retrieval.ingest([outside], "default")  # as `feldspar ingest` would, outside the UI's roots
    assert library.ingest_folder("default", str(allowed / "notes")).ok and library.wait(WAIT_S)
    (allowed / "notes" / "note01.md").unlink()
    (allowed / "notes" / "new.md").write_text("# New\n\nA new note.\n", encoding="utf-8")
    outcome = library.resync("default")
    assert outcome.ok and "not re-synced" in outcome.message and str(outside) in outcome.message
    assert library.wait(WAIT_S)
    view = library.ingest_job()
    assert view.state == "done" and view.result["indexed"] == 1 and view.result["removed"] == 1
    paths = sorted(row["path"] for row in library.sources("default"))
    assert paths == ["new.md", "note00.md", "note00.md"]


def test_user_errors_in_listings_become_one_line(make_library):
    library = make_library()
    outcome = library.attempt(lambda: library.sources("no such name!"))
    assert not outcome.ok and "invalid collection name" in outcome.message
    missing = library.pack_details("nope")
    assert not missing.ok and "no pack named 'nope'" in missing.message


def test_ui_settings_from_the_environment(monkeypatch, tmp_path):
    from feldspar.settings import load_settings

    assert load_settings().ui_allowed_roots == [Path.home()]
    monkeypatch.setenv("FELDSPAR_UI_ALLOWED_ROOTS", f'["{tmp_path}", "/srv/manuals"]')
    monkeypatch.setenv("FELDSPAR_UI_MAX_UPLOAD_BYTES", "1024")
    settings = load_settings()
    assert settings.ui_allowed_roots == [tmp_path, Path("/srv/manuals")] and settings.ui_max_upload_bytes == 1024
    assert settings.uploads_dir == settings.home / "uploads"


# ---- jobs ----------------------------------------------------------------------------------
def test_a_job_ends_done_failed_with_a_user_line_or_failed_with_a_bug_named():
    from feldspar.retrieval.errors import InvalidSource
    from feldspar.webui.jobs import Job

    def fine(job):
        job.update(phase="working", total=4)
        job.advance(4)
        job.notice("big file a.md")
        return "all done", {"interrupted": False}

    def user_error(job):
        raise InvalidSource("no such file or directory: /x")

    def bug(job):
        return {}["missing"]

    done = Job("ingest", "c", fine).start()
    assert done.wait(WAIT_S)
    view = done.view()
    assert (view.state, view.message, view.fraction, view.notices) == ("done", "all done", 1.0, ("big file a.md",))
    failed = Job("ingest", "c", user_error).start()
    assert failed.wait(WAIT_S) and failed.view().state == "failed"
    assert failed.view().message == "no such file or directory: /x"
    broken = Job("pack", "p", bug).start()
    assert broken.wait(WAIT_S) and broken.view().state == "failed"
    assert broken.view().message.startswith("unexpected error (KeyError") and not broken.view().active


def test_cancel_marks_the_job_and_its_work_decides_it_was_interrupted():
    from feldspar.webui.jobs import Job
    import threading

    started = threading.Event()

    def work(job):
        started.set()
        assert job.stop.wait(WAIT_S)
        return "stopped", {"interrupted": True}

    job = Job("ingest", "c", work).start()
    assert started.wait(WAIT_S)
    assert job.view().active
    job.cancel()
    assert job.view().state in ("cancelling", "cancelled")
    assert job.wait(WAIT_S) and job.view().state == "cancelled" and job.view().message == "stopped"


def test_parser_workers_do_not_rerun_a_host_main_script(tmp_path, monkeypatch):
    """Inside Streamlit, ``__main__`` is the page script; parser workers must not execute it again."""
    import types

    from feldspar.retrieval.loaders import load_file
    from feldspar.retrieval.sandbox import ParserPool

    script = tmp_path / "host_script.py"
    marker = tmp_path / "ran-in-a-worker"
    script.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
                      "raise SystemExit('the host script ran in a parser worker')\n", encoding="utf-8")
    host = types.ModuleType("__main__")
    host.__file__ = str(script)
    monkeypatch.setitem(sys.modules, "__main__", host)
    doc = tmp_path / "doc.md"
    doc.write_text("# Title\n\nSome text.\n", encoding="utf-8")
    with ParserPool(1, 120, None) as pool:
        outcomes = list(pool.run([(0, load_file, (str(doc), str(tmp_path), 10_000))]))
    assert outcomes[0][1].status == "ok" and "Some text" in outcomes[0][1].value.text
    assert not marker.exists() and sys.modules["__main__"] is host
