"""`feldspar eval answers`: the agent over questions with expected sources and facts, on the tiny checkpoint.

The metrics themselves are checked in tests/agents/test_answer_eval.py and, on cited
answers of a scripted model, in tests/app/test_api.py; here the command's table, --json,
bad lines and errors.
"""

from __future__ import annotations

import json

from tests.app.cli_runner import assert_one_error_line, run_cli

LINES = ['{"id": "r", "question": "How do I reset it?", "expected_sources": ["guide.md"], '
         '"expected_facts": ["ten seconds"]}',
         '{"id": "n", "question": "No expectations?"}',
         '{"id": "f", "question": "Facts only?", "expected_facts": ["amber", "two years"]}']


def test_eval_answers_table_and_json(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    questions = tmp_path / "eval.jsonl"
    questions.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    args = ["eval", "answers", str(questions), "--model", str(tiny_checkpoint), "--policy", "none",
            "--max-new-tokens", "4"]
    table = run_cli(args, capsys, monkeypatch)
    assert table.code == 0, table.err
    assert "source_recall" in table.out and "citation_precision" in table.out and "overall" in table.out
    assert f"{questions}:2: skipped" in table.err and "RANDOM WEIGHTS" in table.err

    out = tmp_path / "answers.jsonl"
    result = run_cli([*args, "--json", "--out", str(out)], capsys, monkeypatch)
    report = json.loads(result.out)
    assert report["questions"] == 2 and report["random_weights"] is True
    assert [b["line"] for b in report["bad_lines"]] == [2]
    rows = {row["id"]: row for row in report["per_question"]}
    assert rows["r"]["source_recall"] == 0.0 and rows["r"]["cited"] == 0  # no retrieval, nothing cited
    assert rows["f"]["source_recall"] is None and rows["f"]["exact_match"] is False
    assert report["overall"]["source_recall_n"] == 1 and report["overall"]["exact_match_n"] == 2
    saved = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in saved] == ["r", "f"] and saved[0]["expected_facts"] == ["ten seconds"]

    rescored = run_cli([*args, "--json", "--out", str(out), "--model", str(tmp_path / "no-model")],
                       capsys, monkeypatch)  # every id is in --out already: no model is needed
    assert rescored.code == 0, rescored.err
    assert json.loads(rescored.out)["per_question"] == report["per_question"] and len(out.read_text().splitlines()) == 2


def test_eval_answers_without_usable_questions_fails(tmp_path, capsys, monkeypatch):
    questions = tmp_path / "eval.jsonl"
    questions.write_text('{"id": "n", "question": "No expectations?"}\n', encoding="utf-8")
    result = run_cli(["eval", "answers", str(questions)], capsys, monkeypatch)
    assert result.code == 1 and result.err.strip().splitlines()[-1].startswith("error: ")
    assert "no usable question" in result.err and "expected_sources" in result.err
    missing = run_cli(["eval", "answers", str(tmp_path / "nope.jsonl")], capsys, monkeypatch)
    assert_one_error_line(missing, 1, "cannot read questions file")
