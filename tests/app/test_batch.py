"""`feldspar batch`: questions in, durable answers out (agents/batch.py, app/cli/batch.py).

The runner is driven through the real composition root (Runtime.agents → assemble_agent → the
agent graph) on a scripted Granite chat model; the command itself runs on the tiny random
checkpoint, once killed with a real SIGKILL in the middle of writing an answer.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.app.cli_runner import assert_one_error_line, run_cli
from tests.app.test_cli_usage import read_only_folder  # noqa: F401 - a fixture

CALL = '<tool_call>\n{{"name": "calculator", "arguments": {{"expression": "{}"}}}}\n</tool_call>'


def last_user(request: dict) -> str:
    return next(m["content"] for m in reversed(request["messages"]) if m["role"] == "user")


def reply(request: dict) -> str:
    """Answers from the request alone (so any order of requests gives the same answers)."""
    last = request["messages"][-1]
    if last["role"] == "tool":
        return f"The result is {last['content']}."
    question = last_user(request)
    if question.startswith("calc "):
        return CALL.format(question[5:])
    if "explode" in question:
        raise RuntimeError("backend went away")
    turns = sum(1 for m in request["messages"] if m["role"] == "user")
    return f"Answer to {question} (turn {turns})"


def scripted(n: int = 64, max_concurrency: int | None = None):
    from feldspar.agents.chat_model import ChatGranite
    from feldspar.agents.scripted import ScriptedBackend

    backend = ScriptedBackend([reply] * n)
    if max_concurrency is not None:
        backend.max_concurrency = max_concurrency  # as a remote backend declares how many requests it serves
    return ChatGranite(backend=backend)


def factory(chat_model=None):
    from feldspar.compose import build_runtime
    from feldspar.settings import load_settings

    return build_runtime(load_settings(), chat_model=chat_model or scripted()).agents(policy="none", approve="never")


def write_lines(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


QUESTIONS = ['{"id": "a", "question": "calc 6*7"}', '{"id": "b", "question": "What is feldspar?"}',
             '{"id": "c", "question": "first?", "thread": "t"}', '{"id": "d", "question": "second?", "thread": "t"}']


# ---- reading questions ----------------------------------------------------------------------
def test_malformed_lines_are_reported_with_numbers_and_the_rest_kept(tmp_path):
    from feldspar.agents.batch import read_questions

    path = write_lines(tmp_path / "q.jsonl", '{"id": "a", "question": "ok?"}', "not json", "", '["a list"]',
                       '{"id": "b"}', '{"id": "a", "question": "again?"}', '{"id": 7, "question": "seven?"}',
                       '{"question": "no id?"}', '{"id": "x", "question": "q", "collection": "c", "pack": "p"}',
                       '{"id": "y", "question": "q", "thread": 5}')
    items, bad = read_questions(path)
    assert [(i.id, i.line) for i in items] == [("a", 1), ("7", 7), ("8", 8)]
    reasons = {b.line: b.reason for b in bad}
    assert sorted(reasons) == [2, 4, 5, 6, 9, 10]
    assert "not valid JSON" in reasons[2] and "JSON object" in reasons[4] and '"question"' in reasons[5]
    assert "duplicate id 'a' (first on line 1)" in reasons[6] and "not both" in reasons[9] and '"thread"' in reasons[10]


# ---- the answer file ------------------------------------------------------------------------
def test_a_torn_last_line_is_truncated_and_complete_lines_are_kept(tmp_path):
    from feldspar.agents.batch import AnswerLog

    out = tmp_path / "answers.jsonl"
    good = '{"id": "a", "answer": "x"}\n{"id": "b", "answer": "y"}\n'
    out.write_bytes(good.encode() + b'{"id": "c", "ans')
    log = AnswerLog(out)
    assert log.torn_bytes == len('{"id": "c", "ans') and log.done == {"a", "b"}
    log.append({"id": "c", "answer": "z"})
    log.close()
    assert out.read_text().startswith(good) and [r["id"] for r in records(out)] == ["a", "b", "c"]


def test_a_second_writer_of_the_same_file_is_refused(tmp_path):
    from feldspar.agents.batch import AnswerLog, BatchError

    first = AnswerLog(tmp_path / "answers.jsonl")
    with pytest.raises(BatchError, match="another batch is writing"):
        AnswerLog(tmp_path / "answers.jsonl")
    first.close()
    AnswerLog(tmp_path / "answers.jsonl").close()  # free again once the first one is done


# ---- running on the scripted model ----------------------------------------------------------
def test_batch_answers_with_tools_threads_trace_and_reuse(tmp_path):
    from feldspar.agents.batch import AnswerLog, read_questions, run_batch

    items, _ = read_questions(write_lines(tmp_path / "q.jsonl", *QUESTIONS))
    log = AnswerLog(tmp_path / "answers.jsonl")
    new, summary = run_batch(items, factory(), log.append, done=log.done)
    log.close()
    saved = {r["id"]: r for r in records(tmp_path / "answers.jsonl")}
    assert [r["id"] for r in new] == ["a", "b", "c", "d"] and set(saved) == {"a", "b", "c", "d"}
    assert saved["a"]["answer"] == "The result is 42." and [s["node"] for s in saved["a"]["trace"]] == [
        "model", "tool", "model", "finalize"]
    assert saved["b"]["answer"] == "Answer to What is feldspar? (turn 1)" and saved["b"]["error"] is None
    assert saved["c"]["thread_id"] == saved["d"]["thread_id"] != saved["b"]["thread_id"]
    assert saved["d"]["answer"] == "Answer to second? (turn 2)"  # same thread: it saw the first question
    assert summary.answered == 4 and summary.failed == 0
    assert summary.reused_tokens > 0 and summary.computed_tokens > 0  # the shared prefix is reused
    assert summary.reused_tokens + summary.computed_tokens == summary.prompt_tokens
    assert saved["b"]["usage"]["reused_tokens"] > saved["b"]["usage"]["computed_tokens"]


def test_a_rerun_skips_answered_ids_and_continues_labelled_threads(tmp_path):
    from feldspar.agents.batch import AnswerLog, read_questions, run_batch

    chat_model = scripted()
    agents = factory(chat_model)
    first, _ = read_questions(write_lines(tmp_path / "q1.jsonl", *QUESTIONS[1:3]))
    log = AnswerLog(tmp_path / "answers.jsonl")
    run_batch(first, agents, log.append, done=log.done)
    log.close()
    calls = len(chat_model.backend.requests)
    every, _ = read_questions(write_lines(tmp_path / "q2.jsonl", *QUESTIONS))
    log = AnswerLog(tmp_path / "answers.jsonl")
    new, summary = run_batch(every, agents, log.append, done=log.done, previous=log.records)
    log.close()
    assert [r["id"] for r in new] == ["a", "d"] and summary.skipped == 2
    assert len(chat_model.backend.requests) == calls + 3  # a: call + answer; d: one answer
    saved = {r["id"]: r for r in records(tmp_path / "answers.jsonl")}
    assert len(records(tmp_path / "answers.jsonl")) == 4
    assert saved["d"]["thread_id"] == saved["c"]["thread_id"] and saved["d"]["answer"].endswith("(turn 2)")


def test_workers_give_the_same_answers_as_one_worker(tmp_path):
    from feldspar.agents.batch import parse_lines, run_batch

    lines = [json.dumps({"id": f"q{i}", "question": f"question {i}?"}) for i in range(8)]
    lines += ['{"id": "t1", "question": "one?", "thread": "T"}', '{"id": "t2", "question": "two?", "thread": "T"}',
              '{"id": "t3", "question": "three?", "thread": "T"}', '{"id": "x", "question": "calc 2**10"}']
    items, _ = parse_lines(lines)
    answers = {}
    for workers in (1, 4):
        written: list[dict] = []
        assert factory().max_workers() == 1  # a backend that declares nothing serves one request at a time
        agents = factory(scripted(max_concurrency=4))
        assert agents.max_workers() == 4
        new, summary = run_batch(items, agents, written.append, workers=workers)
        assert [r["id"] for r in new] == [i.id for i in items] and summary.workers == workers
        assert sorted(r["id"] for r in written) == sorted(i.id for i in items)
        answers[workers] = {r["id"]: r["answer"] for r in new}
    assert answers[1] == answers[4]
    assert answers[4]["t3"] == "Answer to three? (turn 3)" and answers[4]["x"] == "The result is 1024."


def test_a_failing_question_is_recorded_and_the_rest_answered(tmp_path):
    from feldspar.agents.batch import parse_lines, run_batch

    items, _ = parse_lines(['{"id": "1", "question": "fine?"}', '{"id": "2", "question": "explode now"}',
                            '{"id": "3", "question": "fine again?"}'])
    written: list[dict] = []
    new, summary = run_batch(items, factory(), written.append)
    assert [(r["id"], r["error"]) for r in written] == [("1", None), ("2", "RuntimeError: backend went away"),
                                                        ("3", None)]
    assert summary.answered == 2 and summary.failed == 1 and written[1]["answer"] is None


def test_the_local_engine_runs_one_worker(tiny_checkpoint):
    from feldspar.compose import build_runtime
    from feldspar.settings import load_settings

    agents = build_runtime(load_settings(model=str(tiny_checkpoint))).agents(policy="none")
    assert agents.max_workers() == 1


# ---- the command ----------------------------------------------------------------------------
def test_an_output_that_cannot_be_written_fails_before_any_work(tmp_path, read_only_folder, capsys, monkeypatch):
    questions = write_lines(tmp_path / "q.jsonl", *QUESTIONS)
    (tmp_path / "afile").write_text("x")
    for out in (tmp_path, tmp_path / "afile" / "answers.jsonl", read_only_folder / "answers.jsonl"):
        result = run_cli(["batch", str(questions), "--out", str(out), "--model", str(tmp_path / "no-model")],
                         capsys, monkeypatch)  # the model is never looked at: the output is checked first
        assert_one_error_line(result, 1, f"cannot write the output file {out}")
        assert "--out" in result.err


def test_nothing_usable_exits_non_zero_with_the_bad_lines_named(tmp_path, capsys, monkeypatch):
    questions = write_lines(tmp_path / "q.jsonl", "nope", '{"id": "a"}')
    out = tmp_path / "answers.jsonl"
    result = run_cli(["batch", str(questions), "--out", str(out)], capsys, monkeypatch)
    lines = result.err.strip().splitlines()
    assert result.code == 1 and lines[-1].startswith("error: ") and "no usable question" in lines[-1]
    assert f"{questions}:1: skipped: not valid JSON" in result.err and f"{questions}:2: skipped" in result.err
    missing = run_cli(["batch", str(tmp_path / "missing.jsonl"), "--out", str(out)], capsys, monkeypatch)
    assert_one_error_line(missing, 1, "cannot read questions file")
    both = run_cli(["batch", str(questions), "--out", str(out), "--collection", "c", "--pack", "p"],
                   capsys, monkeypatch)
    assert_one_error_line(both, 2, "not both")


def test_kill_9_mid_write_then_resume_on_the_tiny_checkpoint(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    questions = write_lines(tmp_path / "q.jsonl", '{"id": "a", "question": "one?"}', "{broken",
                            '{"id": "b", "question": "two?"}', '{"id": "c", "question": "three?"}')
    out = tmp_path / "answers.jsonl"
    args = ["batch", str(questions), "--out", str(out), "--model", str(tiny_checkpoint), "--policy", "none",
            "--max-new-tokens", "4"]
    env = {**os.environ, "FELDSPAR_CRASH_AT": "batch_torn_write:2"}  # SIGKILL halfway through writing answer 2
    killed = subprocess.run([sys.executable, "-m", "feldspar", *args], env=env, capture_output=True, text=True,
                            timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    data = out.read_bytes()
    first_line = data[:data.index(b"\n") + 1]
    assert json.loads(first_line)["id"] == "a" and not data.endswith(b"\n") and len(data) > len(first_line)

    resumed = run_cli([*args, "--workers", "2"], capsys, monkeypatch)
    assert resumed.code == 0, resumed.err
    assert "removed an unfinished last line" in resumed.err and f"{questions}:2: skipped" in resumed.err
    assert "one request at a time" in resumed.err
    summary = " ".join(resumed.err.split())
    assert "RANDOM WEIGHTS · 2 answered, 0 failed, 1 already in" in summary and "reused" in summary
    saved = records(out)
    assert out.read_bytes().startswith(first_line) and [r["id"] for r in saved] == ["a", "b", "c"]
    assert all(r["random_weights"] and r["usage"]["prompt_tokens"] > 0 and r["trace"] for r in saved)
    assert saved[2]["usage"]["reused_tokens"] > 0  # the system prompt and tools were not recomputed

    again = run_cli([*args, "--json"], capsys, monkeypatch)
    report = json.loads(again.out)
    assert again.code == 0 and report["skipped"] == 3 and report["answered"] == 0
    assert report["bad_lines"] == [{"line": 2, "reason": report["bad_lines"][0]["reason"]}]
    assert len(records(out)) == 3


def test_a_last_line_without_newline_that_is_whole_is_kept(tmp_path):
    from feldspar.agents.batch import AnswerLog

    out = tmp_path / "answers.jsonl"
    out.write_text('{"id": "a", "answer": "x"}\n{"id": "b", "answer": "y"}')  # edited by hand, no final newline
    log = AnswerLog(out)
    log.append({"id": "c", "answer": "z"})
    log.close()
    assert log.torn_bytes == 0 and [r["id"] for r in records(out)] == ["a", "b", "c"]


def test_a_missing_model_stops_once_and_all_failing_exits_1(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    questions = write_lines(tmp_path / "q.jsonl", '{"id": "a", "question": "one?", "pack": "no-such-pack"}',
                            '{"id": "b", "question": "two?", "pack": "no-such-pack"}')
    out = tmp_path / "answers.jsonl"
    missing = run_cli(["batch", str(questions), "--out", str(out), "--model", str(tmp_path / "no-model")],
                      capsys, monkeypatch)
    assert missing.code == 1 and missing.err.startswith("error: ") and len(missing.err.strip().splitlines()) == 1
    assert out.read_text() == ""
    failed = run_cli(["batch", str(questions), "--out", str(out), "--model", str(tiny_checkpoint),
                      "--max-new-tokens", "4"], capsys, monkeypatch)
    last = failed.err.strip().splitlines()[-1]
    assert failed.code == 1 and last.startswith("error: no question could be answered") and "no-such-pack" in last
    assert [(r["id"], "no-such-pack" in r["error"]) for r in records(out)] == [("a", True), ("b", True)]


def test_a_data_home_that_cannot_be_written_fails_before_any_work(tmp_path, read_only_folder, capsys, monkeypatch):
    questions = write_lines(tmp_path / "q.jsonl", *QUESTIONS)
    result = run_cli(["batch", str(questions), "--out", str(tmp_path / "answers.jsonl"),
                      "--home", str(read_only_folder / "home"), "--model", str(tmp_path / "no-model")],
                     capsys, monkeypatch)
    assert_one_error_line(result, 1, "data home")


def test_the_questions_file_is_never_the_output(tmp_path, capsys, monkeypatch):
    questions = write_lines(tmp_path / "q.jsonl", *QUESTIONS)
    result = run_cli(["batch", str(questions), "--out", str(questions)], capsys, monkeypatch)
    assert_one_error_line(result, 2, "--out must not be the questions file")
    assert questions.read_text() == "".join(line + "\n" for line in QUESTIONS)


def test_a_torn_line_longer_than_the_read_block_is_found(tmp_path):
    from feldspar.agents.batch import AnswerLog

    out = tmp_path / "answers.jsonl"
    good = json.dumps({"id": "a", "answer": "x" * 70000}) + "\n"
    torn = json.dumps({"id": "b", "answer": "y" * 150000})[:-10]
    out.write_text(good + torn)
    log = AnswerLog(out)
    log.close()
    assert log.torn_bytes == len(torn) and out.read_text() == good and log.records == [
        {"id": "a", "thread": None, "thread_id": None, "error": None}]
    only_torn = tmp_path / "torn.jsonl"
    only_torn.write_text(torn)
    AnswerLog(only_torn).close()
    assert only_torn.read_text() == ""


def test_the_progress_bar_shows_count_rate_and_eta(monkeypatch):
    import io

    from rich.console import Console

    import feldspar.cli.batch as batch_cli

    screen = io.StringIO()
    monkeypatch.setattr(batch_cli, "err_console", Console(file=screen, force_terminal=True, width=120))
    now = [100.0]
    with batch_cli.BatchBar(4, enabled=True, clock=lambda: now[0]) as bar:
        for record in ({"id": "a"}, {"id": "b", "error": "boom"}, {"id": "c"}):
            now[0] += 2.0
            bar.advance(record)
    shown = screen.getvalue()
    assert "questions" in shown and "3/4" in shown and "ETA" in shown
    assert "0.50 q/s · 1 failed" in shown  # 3 questions in 6 s


def test_a_rerun_retries_failed_lines_and_keeps_the_answered_ones(tmp_path):
    from feldspar.agents.batch import AnswerLog, parse_lines, run_batch

    outage = [True]

    def flaky(request: dict) -> str:
        if "flaky" in last_user(request) and outage[0]:
            raise RuntimeError("backend went away")
        return reply(request)

    from feldspar.agents.chat_model import ChatGranite
    from feldspar.agents.scripted import ScriptedBackend

    chat_model = ChatGranite(backend=ScriptedBackend([flaky] * 8))
    items, _ = parse_lines(['{"id": "1", "question": "fine?"}', '{"id": "2", "question": "flaky now?"}'])
    out = tmp_path / "answers.jsonl"
    log = AnswerLog(out)
    run_batch(items, factory(chat_model), log.append, done=log.done)
    log.close()
    outage[0] = False  # the transient cause is gone
    log = AnswerLog(out)
    assert log.done == {"1"} and log.failed == {"2"}
    calls = len(chat_model.backend.requests)
    new, summary = run_batch(items, factory(chat_model), log.append, done=log.done, previous=log.records)
    log.close()
    assert [r["id"] for r in new] == ["2"] and new[0]["error"] is None and summary.skipped == 1
    assert len(chat_model.backend.requests) == calls + 1  # the answered line was not asked again
    assert [(r["id"], r["error"] is None) for r in records(out)] == [("1", True), ("2", False), ("2", True)]
    assert AnswerLog(out).failed == set()
