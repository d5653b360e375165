"""Answer a list of questions into a resumable JSONL file, the way `feldspar batch` does.

    python examples/batch_questions.py [--home DIR] [--model PATH]
"""

from __future__ import annotations

import json
from pathlib import Path

from _common import parse_args, question_of, scripted_model

from feldspar import Feldspar


def main() -> None:
    args = parse_args(__doc__)
    questions = [{"id": "q1", "question": "What is Feldspar?"},
                 {"id": "q2", "question": "Which models does it run?"},
                 {"id": "q3", "question": "And how fast is it?", "thread": "follow-up"},
                 {"id": "q4", "question": "Why?", "thread": "follow-up"}]
    # One scripted reply per question, written from the request it answers.
    chat_model = scripted_model([lambda request: f"(scripted) You asked: {question_of(request)}"] * 4, args.model)
    fs = Feldspar(home=args.home, model=args.model, chat_model=chat_model, policy="none", max_new_tokens=32)

    out = Path(args.home) / "answers.jsonl"
    result = fs.batch(questions, out=out)
    print(f"{result.summary.answered} answered; prompt tokens {result.summary.reused_tokens} reused, "
          f"{result.summary.computed_tokens} computed")
    again = fs.batch(questions, out=out)  # resumable: every id is already in the file
    print(f"second run: {again.summary.skipped} skipped, {again.summary.answered} answered")
    for line in out.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        print(record["id"], record["thread_id"], "->", record["answer"][:80])
    if any(record.get("random_weights") for record in result.records):
        print("[RANDOM WEIGHTS: the answers above are noise from an untrained test model]")


if __name__ == "__main__":
    main()
