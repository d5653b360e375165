"""A scripted chat backend: replies written in advance, for tests and examples.

``ScriptedBackend(replies)`` implements the chat-backend protocol (agents/backend.py)
without a model. Each ``stream_chat`` call emits the next scripted reply, raw Granite-format
assistant text such as ``'<tool_call>\\n{"name": "calculator", "arguments": {...}}\\n</tool_call>'``
or plain text, in small deltas; so ``ChatGranite(backend=ScriptedBackend([...]))`` is a
Granite chat model whose output goes through the real tool-call parser. A reply may also be
a function of the request (``reply(request) -> str``) or an exception instance to raise.

Every request is recorded in ``requests`` (messages, tools, documents, generation settings,
the rendered prompt). Tokens follow a simple deterministic rule (a word, a punctuation
mark or a run of whitespace is one token), and reuse is simulated the way the engine's
prefix cache behaves: the reused tokens of a prompt are its longest common prefix with an
earlier prompt plus its reply, so reuse statistics in agent tests mean something. The
prompt layout follows Granite's (system, tools, documents, then the turns in order) but is
not the checkpoint's template. Knows the backend protocol and text; nothing of models.
"""

from __future__ import annotations

import copy
import json
import re
import zlib
from typing import Any, Callable, Iterator, Sequence

from feldspar.model.errors import ContextOverflowError
from feldspar.model.results import GenerationResult, Stream
from feldspar.model.stops import StopScanner

Reply = str | Callable[[dict[str, Any]], str] | BaseException
_TOKEN = re.compile(r"\w+|\s+|[^\w\s]", re.UNICODE)


class ScriptExhausted(RuntimeError):
    """The script has no reply left for a request."""


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def token_id(token: str) -> int:
    return zlib.crc32(token.encode("utf-8", "surrogatepass"))


def _turn(role: str, content: str) -> str:
    return f"<|start_of_role|>{role}<|end_of_role|>{content}<|end_of_text|>\n"


def _text(content: Any) -> str:
    return content if isinstance(content, str) else json.dumps(content, ensure_ascii=False, default=str)


def _call_text(call: dict[str, Any]) -> str:
    function = call.get("function", call)
    arguments = function.get("arguments") or {}
    arguments = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False, default=str)
    return f'<tool_call>\n{{"name": {json.dumps(function.get("name"), ensure_ascii=False)}, "arguments": {arguments}}}\n</tool_call>'


def _system(messages: list[dict[str, Any]], tools, documents) -> str:
    system = _text(messages[0].get("content") or "") if messages and messages[0].get("role") == "system" else ""
    blocks = [system] if system else []
    if tools:
        blocks.append("<tools>\n" + "\n".join(json.dumps(t, ensure_ascii=False) for t in tools) + "\n</tools>")
    if documents:
        blocks.append("<documents>\n" + "\n".join(json.dumps(d, ensure_ascii=False, default=str) for d in documents)
                      + "\n</documents>")
    return _turn("system", "\n\n".join(blocks) or "You are a helpful assistant.")


def render(messages: Sequence[dict[str, Any]], tools=None, documents=None) -> str:
    """A Granite-like prompt text: system, tools and documents first, then each turn appended
    (tool calls and merged tool responses written as Granite's template writes them)."""
    messages = list(messages)
    text = _system(messages, tools, documents)
    turns = messages[1:] if messages and messages[0].get("role") == "system" else messages
    for i, message in enumerate(turns):
        role, content = message.get("role", "user"), _text(message.get("content") or "")
        if role == "tool":
            text += "<|start_of_role|>user<|end_of_role|>" if i == 0 or turns[i - 1].get("role") != "tool" else ""
            text += f"\n<tool_response>\n{content}\n</tool_response>"
            text += "<|end_of_text|>\n" if i == len(turns) - 1 or turns[i + 1].get("role") != "tool" else ""
        elif role == "assistant" and message.get("tool_calls"):
            calls = [("\n" if content or j else "") + _call_text(c) for j, c in enumerate(message["tool_calls"])]
            text += _turn("assistant", content + "".join(calls))
        else:
            text += _turn(role, content)
    return text + "<|start_of_role|>assistant<|end_of_role|>"


class ScriptedBackend:
    random_weights = False

    def __init__(self, replies: Sequence[Reply], name: str = "scripted", context_window: int = 8192,
                 delta_tokens: int = 2) -> None:
        self.replies = list(replies)
        self.name = name
        self.context_window = context_window
        self.delta_tokens = max(1, delta_tokens)
        self.requests: list[dict[str, Any]] = []
        self._seen: list[list[int]] = []  # prompt + reply ids of every finished call (the simulated cache)

    @property
    def remaining(self) -> int:
        return len(self.replies) - len(self.requests)

    # ---- the protocol ---------------------------------------------------------------------
    def render(self, messages, tools=None, documents=None) -> str:
        """The prompt text ``prompt_token_ids`` counts (as LocalChatBackend.render)."""
        return render(messages, tools, documents)

    def prompt_token_ids(self, messages, tools=None, documents=None) -> list[int]:
        return [token_id(t) for t in tokens(render(messages, tools, documents))]

    def count_tokens(self, text: str) -> int:
        return len(tokens(text))

    def stream_chat(self, messages, tools=None, documents=None, *, max_new_tokens: int = 512,
                    temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None,
                    reuse: bool | None = None, stop: Sequence[str] | None = None) -> Stream:
        prompt = render(messages, tools, documents)
        ids = [token_id(t) for t in tokens(prompt)]
        if len(ids) + max_new_tokens > self.context_window:
            raise ContextOverflowError(f"prompt is {len(ids)} tokens + {max_new_tokens} new tokens, over the "
                                       f"{self.context_window}-token context window of {self.name}")
        request = {"messages": copy.deepcopy(list(messages)), "tools": copy.deepcopy(tools),
                   "documents": copy.deepcopy(documents), "max_new_tokens": max_new_tokens,
                   "temperature": temperature, "top_p": top_p, "seed": seed, "reuse": reuse,
                   "stop": list(stop or []), "prompt": prompt, "prompt_tokens": len(ids)}
        reply = self._next_reply(request)
        self.requests.append(request)
        holder: list[GenerationResult] = []
        return Stream(self._generate(ids, reply, request, holder), holder)

    # ---- inside ---------------------------------------------------------------------------
    def _next_reply(self, request: dict[str, Any]) -> str:
        if len(self.requests) >= len(self.replies):
            last_user = next((m.get("content") for m in reversed(request["messages"]) if m.get("role") == "user"), None)
            raise ScriptExhausted(f"the script has {len(self.replies)} replies and all were used; "
                                  f"request {len(self.requests) + 1} (last user message: {last_user!r}) has none")
        reply = self.replies[len(self.requests)]
        if isinstance(reply, BaseException):
            self.requests.append(request)
            raise reply
        return reply(request) if callable(reply) else reply

    def _reused(self, ids: list[int], reuse: bool | None) -> int:
        if reuse is False:
            return 0
        best = 0
        for seen in self._seen:
            same = 0
            for a, b in zip(ids, seen):
                if a != b:
                    break
                same += 1
            best = max(best, same)
        return best

    def _generate(self, ids: list[int], reply: str, request: dict[str, Any],
                  holder: list[GenerationResult]) -> Iterator[str]:
        reused = self._reused(ids, request["reuse"])
        pieces = tokens(reply)
        finish = "length" if len(pieces) > request["max_new_tokens"] else "stop"
        pieces = pieces[:request["max_new_tokens"]]
        stops = StopScanner(request["stop"])
        for start in range(0, len(pieces), self.delta_tokens):
            delta = stops.push("".join(pieces[start:start + self.delta_tokens]))
            if delta:
                yield delta
            if stops.stopped:
                break
        tail = stops.flush()
        if tail:
            yield tail
        text = stops.text()
        completion = [token_id(t) for t in tokens(text)]
        self._seen.append(ids + completion)
        holder.append(GenerationResult(
            text=text, prompt_tokens=len(ids), completion_tokens=len(completion),
            finish_reason="stop" if stops.stopped else finish, reused_tokens=reused,
            computed_tokens=len(ids) - reused, token_ids=completion))
