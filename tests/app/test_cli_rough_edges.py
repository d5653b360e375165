"""Small things a newcomer met (issue 19, item 7): each now behaves as the docs say."""

from __future__ import annotations

import sys

import pytest

from tests.app.cli_runner import assert_one_error_line

from feldspar.labels import RANDOM_LABEL


def test_ask_prints_the_random_weights_line_before_the_answer(cli, tiny_checkpoint):
    result = cli("ask", "Hi?", "-m", str(tiny_checkpoint), "-n", "3", "--policy", "none")
    assert result.code == 0 and result.out.startswith(RANDOM_LABEL + "\n"), result.out


@pytest.mark.parametrize("args, code, needle", [
    (["ask", "q", "--policy", "pack"], 2, "--pack NAME"),
    (["search", "router", "--type", "bogus"], 2, "'bogus' is not a file type"),
    (["generate", "Hi", "-m", "./nope"], 1, "no such directory: ./nope"),
    (["ask", "q", "-m", "/no/such/checkpoint"], 1, "no such directory: /no/such/checkpoint"),
    (["bench", "retrieval", "--sync-files", "-3"], 2, "--sync-files"),
])
def test_bad_input_is_one_line_before_any_work(cli, args, code, needle):
    assert_one_error_line(cli(*args), code, needle)


def test_pack_documents_skip_hidden_entries(tmp_path):
    from feldspar.pack_documents import read_pack_documents

    (tmp_path / "guide.md").write_text("# Guide\n\nvisible", encoding="utf-8")
    (tmp_path / ".hidden.md").write_text("secret", encoding="utf-8")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "notes.md").write_text("internal", encoding="utf-8")
    read = read_pack_documents([tmp_path], 10_000_000)
    assert [s["path"] for s in read.sources] == [str(tmp_path / "guide.md")] or \
        [d["title"] for d in read.documents] == ["guide.md"], (read.sources, read.documents)
    assert all("secret" not in d["text"] and "internal" not in d["text"] for d in read.documents)


def test_sources_shows_different_long_paths_differently_and_keeps_their_file_names():
    from feldspar.cli.root import short_paths

    base = "/home/user/notes/nested/deeper/and-deeper-still/"
    paths = [base + "a/modem-setup.md", base + "b/modem-setup.md", base + "router.md", "/short.md"]
    shown = short_paths(paths, 30)
    assert len(set(shown)) == len(paths), shown
    assert all(s.endswith(p.rsplit("/", 1)[-1]) for s, p in zip(shown, paths)), shown
    assert shown[3] == "/short.md" and len(shown[2]) <= 30 and "…" in shown[2], shown


def test_pack_list_gives_each_damaged_pack_a_one_line_reason_and_json_the_full_message(cli, feldspar_home):
    import json

    packs = feldspar_home / "packs"
    (packs / "garbled").mkdir(parents=True)
    (packs / "garbled" / "pack.json").write_text("{not json", encoding="utf-8")
    (packs / "emptied").mkdir()
    meta = {"format": 1, "name": "emptied", "model": "tiny", "dtype": "float32", "tokens": 9, "documents": 1,
            "state_bytes": 1234, "created": "2026-12-01T00:00:00+00:00"}
    (packs / "emptied" / "pack.json").write_text(json.dumps(meta), encoding="utf-8")
    (packs / "emptied" / "documents.json").write_text("[]", encoding="utf-8")
    table = cli("pack", "list", "--home", str(feldspar_home))
    assert table.code == 0, table.err
    lines = table.out.splitlines()
    for name, reason in [("garbled", "pack.json is not valid JSON"), ("emptied", "state.safetensors is missing")]:
        rows = [line for line in lines if name in line]
        assert len(rows) == 1 and reason in rows[0], table.out
    assert len(lines) == 2 and all(line.startswith("damaged ") for line in lines), table.out  # nothing wrapped
    rows = {row["name"]: row for row in json.loads(cli("pack", "list", "--json", "--home", str(feldspar_home)).out)}
    assert "Expecting property name" in rows["garbled"]["error"] and rows["garbled"]["reason"]
    assert rows["emptied"]["reason"] == "state.safetensors is missing" and "re-create" in rows["emptied"]["error"]


PROBE = """
import sys
from feldspar.cli import main
sys.argv = ["feldspar", *sys.argv[1:]]
try:
    main()
finally:
    print("slow imports:", sorted(m for m in ("torch", "transformers") if m in sys.modules), file=sys.stderr)
"""


@pytest.mark.parametrize("args, needle", [
    (["ask", "q", "-m", "bogus-name"], "unknown Granite 4.0 model 'bogus-name'"),
    (["generate", "Hi", "-m", "nonexistent"], "unknown Granite 4.0 model 'nonexistent'"),
    (["chat", "-m", "./nope"], "no such directory: ./nope"),
])
def test_a_bad_model_name_is_refused_before_torch_is_imported(args, needle, tmp_path):
    import os
    import subprocess

    result = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    lines = result.stderr.splitlines()
    assert result.returncode == 1 and lines[0].startswith("error: ") and needle in lines[0], result.stderr
    assert lines[-1] == "slow imports: []", result.stderr


def test_a_pack_far_over_the_window_is_refused_after_tokenising_about_one_window(tiny_checkpoint, tmp_path,
                                                                                   monkeypatch):
    from feldspar.model.engine import Engine, EngineOptions
    from feldspar.model.errors import StateError
    from feldspar.model.packs import create_pack

    engine = Engine.load(str(tiny_checkpoint), EngineOptions(device="cpu", dtype="float32"))
    engine.model.config.max_position_embeddings = 2_000
    line = "Obsidian is volcanic glass; feldspar and quartz make up granite. <|end_of_text|>\n"
    documents = [{"doc_id": i + 1, "title": f"part{i}.md", "text": line * 4_000} for i in range(4)]  # 1.3 MB
    seen: list[int] = []
    tokenizer_call = type(engine.tokenizer).__call__

    def counting_call(self, text=None, *args, **kwargs):
        seen.append(len(text) if isinstance(text, str) else 0)
        return tokenizer_call(self, text, *args, **kwargs)

    monkeypatch.setattr(type(engine.tokenizer), "__call__", counting_call)
    with pytest.raises(StateError, match=r"would need more than [\d,]+ tokens .* 2,000-token context window"):
        create_pack(engine, tmp_path / "packs", "big", documents, [])
    assert sum(seen) < 200_000, f"tokenised {sum(seen):,} characters of 1.3 MB to refuse it"
    assert not (tmp_path / "packs").exists() or list((tmp_path / "packs").iterdir()) == []


TEARDOWN_PROBE = """
import atexit, sys
from feldspar.cli import main

class Held:  # freed only by the interpreter's teardown (a stand-in for the model and native state)
    def __del__(self):
        sys.stderr.write("teardown ran\\n")

HELD = Held()
atexit.register(lambda: sys.stderr.write("atexit ran\\n"))
sys.argv = ["feldspar", *sys.argv[1:]]
main()
"""


def test_ctrl_c_skips_the_interpreter_teardown_but_runs_atexit_and_keeps_the_thread(tiny_checkpoint, tmp_path):
    """The ~2.5 s after the interrupted line was the interpreter freeing everything (issue 19 item 3)."""
    import json
    import os
    import signal
    import subprocess

    env = {**os.environ, "FELDSPAR_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    model = ["-m", str(tiny_checkpoint), "--policy", "none"]

    def feldspar(*args):
        return subprocess.run([sys.executable, "-m", "feldspar", *args], env=env, text=True, capture_output=True,
                              timeout=300)

    first = feldspar("ask", "First?", *model, "-n", "2", "--json")
    assert first.returncode == 0, first.stderr
    thread = json.loads(first.stdout)["thread_id"]
    process = subprocess.Popen([sys.executable, "-c", TEARDOWN_PROBE, "ask", "Second?", "--thread", thread, *model,
                                "-n", "100000"],
                               env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert process.stdout.read(1), process.stderr.read()
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert err.strip().splitlines() == ["interrupted; the thread keeps its last completed turn", "atexit ran"], err
    exported = json.loads(feldspar("threads", "export", thread).stdout)
    assert exported["thread"]["turns"] == 1, exported  # the last completed turn, committed before the fast exit


def test_a_table_piped_to_a_file_is_never_cut_short(capsys):
    from feldspar.cli.root import console, print_table

    rows = [{f"column {i}": f"value-{i}-" + "x" * 12 for i in range(8)}]
    assert not console.is_terminal
    print_table(rows, list(rows[0]), title="wide")
    out = capsys.readouterr().out
    assert "…" not in out
    for i in range(8):
        assert f"value-{i}-" + "x" * 12 in out
