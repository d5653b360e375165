"""Helpers for the `feldspar serve` tests: test-only chat backends served next to real models.

``GatedBackend`` streams "tok " pieces; every piece after the first waits on a gate the test
opens, and each stream records how it ended (closed early by the server, or finished), so
queueing and disconnects are tested by events, never by timing. ``weather_replies`` is a
scripted Granite model that calls a tool when given tools and answers from the tool result.
Imported as ``from tests.app.serve_helpers import …``.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

from feldspar.model.results import GenerationResult, Stream

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@dataclass
class Run:
    """One stream of the gated backend: how many pieces it produced and how it ended."""

    max_new_tokens: int
    produced: int = 0
    closed: threading.Event = field(default_factory=threading.Event)  # the server closed it before its end
    finished: threading.Event = field(default_factory=threading.Event)
    started: threading.Event = field(default_factory=threading.Event)


class GatedBackend:
    name = "gated"
    context_window = 1_000_000
    random_weights = False

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.runs: list[Run] = []
        self._opened = threading.Condition()

    def reset(self) -> None:
        self.gate = threading.Event()
        self.runs = []

    def wait_run(self, index: int, timeout_s: float) -> Run:
        """Run number ``index`` (from 0) once the server has opened it; AssertionError after ``timeout_s``."""
        with self._opened:
            assert self._opened.wait_for(lambda: len(self.runs) > index, timeout_s), "the server opened no such run"
            return self.runs[index]

    def stream_chat(self, messages, tools=None, documents=None, *, max_new_tokens: int = 512, **_options: Any) -> Stream:
        run = Run(max_new_tokens)
        with self._opened:
            self.runs.append(run)
            self._opened.notify_all()
        holder: list[GenerationResult] = []
        return Stream(self._pieces(run, self.gate, holder), holder)

    @staticmethod
    def _pieces(run: Run, gate: threading.Event, holder: list[GenerationResult]):
        run.started.set()
        try:
            for i in range(run.max_new_tokens):
                if i >= 1:
                    gate.wait()
                run.produced += 1
                yield "tok "
        except GeneratorExit:
            run.closed.set()
            raise
        holder.append(GenerationResult(text="tok " * run.produced, prompt_tokens=1, completion_tokens=run.produced,
                                       finish_reason="length", computed_tokens=1))
        run.finished.set()

    def prompt_token_ids(self, messages, tools=None, documents=None) -> list[int]:
        return [1]

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def tool_call_text(name: str, **arguments: Any) -> str:
    return f'<tool_call>\n{json.dumps({"name": name, "arguments": arguments})}\n</tool_call>'


def weather_reply(request: dict[str, Any]) -> str:
    """Call get_weather when tools are given and no tool result came back yet; else answer from it."""
    messages = request["messages"]
    if messages[-1]["role"] == "tool":
        return f"The weather report says: {messages[-1]['content']}"
    last = messages[-1]["content"]
    if request["tools"] and "python" in last:
        return 'get_weather(city="Lyon")'  # a small model's usual mistake, repaired by the parser
    if request["tools"]:
        return "Let me look.\n" + tool_call_text("get_weather", city="Paris")
    return "Hello from the scripted model."


def weather_replies(count: int = 200) -> list[Any]:
    return [weather_reply] * count
