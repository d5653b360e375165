"""Ask a question, then stream a follow-up in the same thread, with the Python API.

    python examples/ask_and_stream.py                 # scripted model, no checkpoint needed
    python examples/ask_and_stream.py --model PATH    # a real (or tiny random) checkpoint
"""

from __future__ import annotations

from _common import parse_args, scripted_model

from feldspar import Feldspar

CALL = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "2340 * 0.17"}}\n</tool_call>'


def main() -> None:
    args = parse_args(__doc__)
    # Scripted replies: a tool call, the answer once the tool result is back, then the follow-up's answer.
    chat_model = scripted_model([CALL, "17% of 2,340 is 397.8.", "Doubled, that is 795.6."], args.model)
    fs = Feldspar(home=args.home, model=args.model, chat_model=chat_model, policy="none", max_new_tokens=48)

    answer = fs.ask("What is 17% of 2,340?")
    print("answer:", answer.text[:200])
    print("steps:", [step["node"] for step in answer.trace])
    print("usage:", answer.usage["prompt_tokens"], "prompt tokens,", answer.usage["reused_tokens"], "reused")

    print("stream:", end=" ")
    for event in fs.stream("And twice that?", thread=answer.thread_id):
        if event.kind == "token":
            print(event.text, end="", flush=True)
        elif event.kind == "answer":
            print(f"\nfinal answer event (thread {event.thread_id}): {event.text!r}")
    if answer.random_weights:
        print("[RANDOM WEIGHTS: the text above is noise from an untrained test model]")


if __name__ == "__main__":
    main()
