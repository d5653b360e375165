"""A thread remembers how it was asked: a follow-up `ask --thread ID` without flags uses the
thread's model and collection or pack; a flag given wins and the change is said; `threads
list` shows whole ids and a unique start of an id is accepted everywhere an id is."""

from __future__ import annotations

import json

from tests.app.cli_runner import run_cli


def test_a_follow_up_uses_the_threads_model_and_a_prefix_of_its_id(tiny_checkpoint, tiny_dense_checkpoint,
                                                                    capsys, monkeypatch):
    def cli(*args):
        return run_cli(list(args), capsys, monkeypatch)

    first = cli("ask", "First?", "-m", str(tiny_checkpoint), "-n", "2", "--policy", "none", "--json")
    assert first.code == 0, first.err
    thread = json.loads(first.out)["thread_id"]
    again = cli("ask", "And the modem?", "--thread", thread[:6], "-n", "2", "--policy", "none", "--json")
    assert again.code == 0, again.err
    answer = json.loads(again.out)
    assert answer["thread_id"] == thread and answer["model"] == json.loads(first.out)["model"]
    switched = cli("ask", "Third?", "--thread", thread, "-m", str(tiny_dense_checkpoint), "-n", "2", "--policy", "none")
    assert switched.code == 0 and f"thread {thread} was asked with model" in switched.err, switched.err
    monkeypatch.setenv("COLUMNS", "40")
    listed = cli("threads", "list")
    assert thread in listed.out, listed.out
    assert json.loads(cli("threads", "export", thread[:4]).out)["thread"]["turns"] == 3


def test_an_ambiguous_or_unknown_prefix_is_one_clear_error(capsys, monkeypatch):
    from feldspar.agents.threads import ThreadStore
    from feldspar.settings import load_settings

    store = ThreadStore(load_settings().threads_path)
    for thread_id in ("abc111", "abc222"):
        store.touch(thread_id, "q", turns=1)
    store.close()
    ambiguous = run_cli(["threads", "show", "abc"], capsys, monkeypatch)
    assert ambiguous.code == 1 and "starts 2 thread ids" in ambiguous.err, ambiguous.err
    unknown = run_cli(["threads", "show", "zzz"], capsys, monkeypatch)
    assert unknown.code == 1 and "no thread 'zzz'" in unknown.err
