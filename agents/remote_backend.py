"""A chat backend on a remote OpenAI-compatible Granite server, through the official ``openai`` client.

``RemoteChatBackend(base_url, model, api_key=...)`` satisfies agents/backend.py, so
``ChatGranite(backend=RemoteChatBackend(...))`` is the same chat model whether Granite runs
in this process or on vLLM, llama-server, Docker Model Runner, Ollama or ``feldspar serve``:

- requests: ``/v1/chat/completions`` streamed, with ``tools=`` passed natively and Granite
  ``documents`` as the extension field ``documents`` (``extra_body``); ``stream_options``
  asks for usage in the last chunk;
- control strings: every string of the messages (tool calls and results included), tools and
  documents, and a FIM prefix/suffix, is ``neutralise``d (model/control_tokens.py) before it
  is sent: the server tokenises text itself, and llama.cpp's server turns ``<|start_of_role|>``
  inside a message into the control token; a zero-width space after the first character
  keeps it text there (docs/remote.md);
- text: content deltas are yielded as they come. Calls the server parsed itself
  (``delta.tool_calls``) are rendered back into Granite's raw form
  ``<tool_call>\\n{"name": …, "arguments": …}\\n</tool_call>`` after the text, so
  ChatGranite's one parser path (``parse_assistant``, repairs and schema checks included)
  reads both them and calls the server left in the content. Server-side call ids are not
  kept (the parser names calls itself; Granite's template does not read ids);
- usage: ``prompt_tokens``, ``completion_tokens`` and ``prompt_tokens_details.cached_tokens``
  (-> ``reused_tokens``; computed = prompt - reused). A server that reports no usage gets
  estimates (below). Timings are measured here: TTFT (request to first delta, so it
  includes the network), decode (first to last delta);
- token counts (``prompt_token_ids``/``count_tokens``): with a ``tokenizer`` callable
  (text -> ids; the app passes one when a local tokenizer is configured) the prompt is
  rendered in Granite's layout (agents/scripted.py ``render``) and encoded; otherwise an
  estimate of one token per ``chars_per_token`` characters (3.0 at first, conservative for
  Granite's ~4 characters per English token), recalibrated from the server's reported
  ``prompt_tokens`` after each call. The ids of an estimate are stand-ins: only their count
  means something;
- ``connect()`` lists the server's models once: a wrong model name fails there with the
  list; ``context_window`` comes from the constructor, else the listing's ``max_model_len``
  (vLLM), ``context_length``/``context_window`` or ``meta.n_ctx``, else
  ``DEFAULT_CONTEXT_WINDOW``; llama-server's ``/props`` per-slot ``n_ctx`` wins over the
  listing (and marks the server as one that ignores ``suffix``: FIM goes as token ids from
  its ``/tokenize``); ``random_weights`` is true only when the listing says so;
- a stream that ends without a ``finish_reason`` is an error marked ``retryable`` (an
  interrupted answer), never an empty answer; counts without usage or tokenizer are
  ``estimated``; ``prompt_ids`` counts with the checkpoint's own template when given.

Structured output (agents/remote_structured.py): ``structure=`` is sent as the server takes it
(``structured``: openai response_format, vllm structured_outputs, llamacpp json_schema); a
server that refuses it gets one ``notice`` line and the request again without it, and
``constrains`` turns false so callers (extract, with_structured_output) validate and retry.

Errors become one-line ``AgentError``s (agents/remote_errors.py), raised by
``stream_chat`` before any text for a refused request. Torch-free; knows the OpenAI wire
format and the chat-backend protocol, nothing of the CLI or settings.
"""

from __future__ import annotations

import json
import math
import sys
import time
import zlib
from typing import Any, Callable, Iterator, Sequence

import httpx
import openai

from feldspar.agents.remote_errors import RemoteServerError, overflow_advice, remote_error, unknown_model
from feldspar.agents.remote_structured import DIALECTS, merged, refused, request_fields
from feldspar.agents.scripted import render
from feldspar.model.control_tokens import neutralise, neutralise_data
from feldspar.model.results import RANDOM_CONTENT_LABEL, GenerationResult, Stream
from feldspar.model.text_checks import check_text

DEFAULT_CONTEXT_WINDOW = 8192
DEFAULT_CHARS_PER_TOKEN = 3.0
FIM_TOKENS = ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")
_WINDOW_KEYS = ("max_model_len", "context_length", "context_window", "max_context_length")


def parse_model_spec(spec: str) -> tuple[str, str] | None:
    """``openai:<base-url>#<model>`` -> (base_url, model); the model may be empty (the server's only one)."""
    if not spec.startswith("openai:"):
        return None
    url, _, model = spec[len("openai:"):].partition("#")
    return url.rstrip("/"), model


def openai_messages(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Granite chat dicts in OpenAI wire shape: call arguments as JSON strings, every call with an id."""
    out, ids = [], iter(f"call_{i}" for i in range(1_000_000))
    last_ids: list[str] = []
    for message in messages:
        item = {k: v for k, v in message.items() if v is not None}
        if item.get("role") == "assistant" and item.get("tool_calls"):
            calls = []
            for call in item["tool_calls"]:
                function = call.get("function", call)
                arguments = function.get("arguments") or {}
                calls.append({"id": call.get("id") or next(ids), "type": "function",
                              "function": {"name": function["name"], "arguments": arguments if isinstance(
                                  arguments, str) else json.dumps(arguments, ensure_ascii=False)}})
            item["tool_calls"], last_ids = calls, [c["id"] for c in calls]
        if item.get("role") == "tool" and not item.get("tool_call_id"):
            item["tool_call_id"] = last_ids.pop(0) if last_ids else next(ids)
        if not isinstance(item.get("content", ""), str):
            item["content"] = json.dumps(item["content"], ensure_ascii=False, default=str)
        out.append(item)
    return out


def call_text(name: str, arguments: str) -> str:
    """A server-parsed call in Granite's raw form (arguments kept as the server sent them when not JSON)."""
    try:
        args = json.dumps(json.loads(arguments or "{}"), ensure_ascii=False)
    except ValueError:
        args = arguments
    return f'<tool_call>\n{{"name": {json.dumps(name, ensure_ascii=False)}, "arguments": {args}}}\n</tool_call>'


class RemoteChatBackend:
    random_weights = False

    def __init__(self, base_url: str, model: str = "", *, api_key: str | None = None, timeout_s: float = 120.0,
                 context_window: int | None = None, tokenizer: Callable[[str], list[int]] | None = None,
                 max_retries: int = 1, client: openai.OpenAI | None = None, max_concurrency: int = 4,
                 structured: str = "openai", notice: Callable[[str], None] | None = None,
                 prompt_ids: Callable[..., list[int]] | None = None) -> None:
        if structured not in DIALECTS:
            raise ValueError(f"structured must be one of {', '.join(DIALECTS)}, not {structured!r}")
        self.base_url = base_url.rstrip("/")
        self.structured = structured  # how this server takes a schema (agents/remote_structured.py)
        self.constrains = True  # False once the server refused a schema: validate-and-retry from then on
        self.notice = notice or (lambda line: print(f"notice: {line}", file=sys.stderr))
        self.prompt_ids = prompt_ids  # (messages, tools, documents) -> ids with the checkpoint's real template
        self.slots: int | None = None  # llama-server: slots sharing its -c window (from /props)
        self.ignores_suffix = False  # llama-server: /v1/completions drops `suffix` (FIM goes as token ids)
        self.max_concurrency = max_concurrency  # requests in flight at once (batch workers); a server batches them
        self.model = model
        self.tokenizer = tokenizer
        self.chars_per_token = DEFAULT_CHARS_PER_TOKEN
        self._window = self._explicit_window = context_window
        self.models: list[str] | None = None
        self.client = client or openai.OpenAI(base_url=self.base_url, api_key=api_key or "not-needed",
                                              timeout=timeout_s, max_retries=max_retries)

    @property
    def name(self) -> str:
        return self.model

    @property
    def context_window(self) -> int:
        return self._window or DEFAULT_CONTEXT_WINDOW

    @property
    def estimated(self) -> bool:
        """True when token counts are a characters-per-token guess (no tokenizer configured)."""
        return self.tokenizer is None

    # ---- the server's model list --------------------------------------------------------------
    def connect(self) -> "RemoteChatBackend":
        """List the server's models: check the model name (or take the only one), read its window."""
        try:
            listed = list(self.client.models.list())
        except openai.NotFoundError:  # a server without /v1/models: nothing to check
            listed = []
        except Exception as exc:  # noqa: BLE001 - mapped to one line, or re-raised when unknown
            raise remote_error(exc, self.base_url, self.model) from None
        if listed:
            self.models = [m.id for m in listed]
            if not self.model and len(self.models) == 1:
                self.model = self.models[0]
            entry = next((m for m in listed if m.id == self.model), None)
            if entry is None:
                raise unknown_model(self.base_url, self.model, self.models)
            self._read_entry(entry.model_dump())
        elif not self.model:
            raise unknown_model(self.base_url, self.model, None)
        self._read_props()
        return self

    @property
    def root_url(self) -> str:
        return self.base_url[:-3] if self.base_url.endswith("/v1") else self.base_url

    def _get(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """A llama.cpp-native endpoint (beside /v1) as JSON, or None when the server has none."""
        try:
            response = httpx.request("POST" if body is not None else "GET", self.root_url + path, json=body,
                                     headers={"Authorization": f"Bearer {self.client.api_key}"}, timeout=10.0)
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        try:
            return response.json()
        except ValueError:
            return None

    def _read_props(self) -> None:
        """llama-server's ``/props``: the per-slot window (``-c`` shared by its slots) wins over any listing."""
        props = self._get("/props")
        if not isinstance(props, dict) or "default_generation_settings" not in props:
            return
        settings = props.get("default_generation_settings") or {}
        self.slots = props.get("total_slots") if isinstance(props.get("total_slots"), int) else None
        if self.slots:  # more requests at once than slots only queue on the server
            self.max_concurrency = max(1, min(self.max_concurrency, self.slots))
        self.ignores_suffix = True
        n_ctx = settings.get("n_ctx")
        if isinstance(n_ctx, int) and n_ctx > 0 and self._explicit_window is None:
            self._window = n_ctx

    def _read_entry(self, entry: dict[str, Any]) -> None:
        meta = entry.get("meta") if isinstance(entry.get("meta"), dict) else {}
        if self._window is None:
            window = next((entry[k] for k in _WINDOW_KEYS if isinstance(entry.get(k), int)), None)
            window = window or meta.get("n_ctx")  # not n_ctx_train: llama-server's slots may be far smaller
            self._window = int(window) if isinstance(window, int) and window > 0 else None
        self.random_weights = bool(entry.get("random_weights") or meta.get("random_weights"))

    # ---- token counts ---------------------------------------------------------------------------
    def render(self, messages, tools=None, documents=None) -> str:
        """The prompt in Granite's layout (not the server's exact template): what the counts measure."""
        return render(messages, tools, documents)

    def _ids(self, text: str) -> list[int]:
        if self.tokenizer is not None:
            return list(self.tokenizer(text))
        step = self.chars_per_token
        count = math.ceil(len(text) / step) if text else 0
        return [zlib.crc32(text[int(i * step):int((i + 1) * step)].encode("utf-8", "surrogatepass"))
                for i in range(count)]

    def prompt_token_ids(self, messages, tools=None, documents=None) -> list[int]:
        if self.prompt_ids is not None:  # the checkpoint's own template: tools and documents intro/outro included
            return list(self.prompt_ids(list(messages), list(tools or []) or None, list(documents or []) or None))
        return self._ids(self.render(messages, tools, documents))

    def count_tokens(self, text: str) -> int:
        return len(self._ids(text))

    def _calibrate(self, prompt_chars: int, prompt_tokens: int) -> None:
        if self.tokenizer is None and prompt_tokens > 0 and prompt_chars > 0:
            self.chars_per_token = max(1.0, min(8.0, prompt_chars / prompt_tokens))

    # ---- generation ------------------------------------------------------------------------------
    def stream_chat(self, messages, tools=None, documents=None, *, max_new_tokens: int = 512,
                    temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None,
                    reuse: bool | None = None, stop: Sequence[str] | None = None, structure: Any = None) -> Stream:
        """Send the request now (a refusal raises here, before any text); read the answer lazily.

        ``structure`` goes to the server in its dialect's form; a server that refuses it is said so
        in one line and asked again without it (callers validate and retry)."""
        for param, value in (("messages", messages), ("tools", tools), ("documents", documents)):
            check_text(list(value) if value else None, param)  # JSON cannot carry an unpaired surrogate
        messages, tools, documents = (neutralise_data(list(v)) if v else v for v in (messages, tools, documents))
        request: dict[str, Any] = dict(model=self.model, messages=openai_messages(messages), stream=True,
                                       stream_options={"include_usage": True}, max_tokens=max_new_tokens,
                                       temperature=temperature, top_p=top_p)
        if tools:
            request["tools"] = list(tools)
        if seed is not None:
            request["seed"] = seed
        if stop:
            request["stop"] = list(stop)
        if documents:
            request["extra_body"] = {"documents": list(documents)}
        prompt_text = self.render(messages, tools, documents)
        started = time.perf_counter()
        chunks = self._send_structured(request, structure)
        holder: list[GenerationResult] = []
        count = lambda: len(self.prompt_token_ids(messages, tools, documents))  # noqa: E731 - when no usage came
        return Stream(self._read(chunks, started, prompt_text, holder, count), holder)

    def stream_completion(self, prompt: str, suffix: str | None = None, *, max_new_tokens: int = 512,
                          temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None,
                          stop: Sequence[str] | None = None) -> Stream:
        """Plain completion (``/v1/completions``); ``suffix`` asks for fill-in-the-middle.

        A plain prompt is the caller's own text and goes as written (as locally); a FIM prefix
        and suffix are code, so control strings in them are neutralised like chat data (or, on a
        server that ignores ``suffix``, sent as ids with the code tokenised as plain text).
        """
        check_text(prompt, "prompt")
        check_text(suffix, "suffix")
        sent: Any = prompt
        if suffix is not None and self.ignores_suffix:  # llama-server drops `suffix`: Granite's FIM prompt, as ids
            sent, suffix = self.fim_token_ids(prompt, suffix), None
        elif suffix is not None:
            sent, suffix = neutralise(prompt), neutralise(suffix)
        request: dict[str, Any] = dict(model=self.model, prompt=sent, stream=True, max_tokens=max_new_tokens,
                                       temperature=temperature, top_p=top_p, stream_options={"include_usage": True})
        for key, value in (("suffix", suffix), ("seed", seed), ("stop", list(stop or []) or None)):
            if value is not None:
                request[key] = value
        started = time.perf_counter()
        chunks = self._send(lambda: self.client.completions.create(**request))
        holder: list[GenerationResult] = []
        return Stream(self._read(chunks, started, prompt + (suffix or ""), holder), holder)

    def _send_structured(self, request: dict[str, Any], structure: Any) -> Any:
        fields = request_fields(structure, self.structured) if self.constrains else {}
        if fields is None:
            self.notice(f"{self.base_url} ({self.structured}) cannot constrain output to a {structure.kind}; "
                        "the answer is validated instead")
        if not fields:
            return self._send(lambda: self.client.chat.completions.create(**request))
        try:
            return self.client.chat.completions.create(**merged(request, fields))
        except openai.OpenAIError as exc:
            if not refused(exc):
                raise remote_error(exc, self.base_url, self.model, self.models) from None
        self.constrains = False
        self.notice(f"{self.base_url} cannot constrain output to a schema; Feldspar validates and retries instead")
        return self._send(lambda: self.client.chat.completions.create(**request))

    def _tokenize(self, text: str, special: bool) -> list[int] | None:
        answer = self._get("/tokenize", {"content": text, "add_special": False, "parse_special": special})
        tokens = answer.get("tokens") if isinstance(answer, dict) else None
        return [int(t) for t in tokens] if isinstance(tokens, list) else None

    def fim_token_ids(self, prefix: str, suffix: str) -> list[int]:
        """``<|fim_prefix|>prefix<|fim_suffix|>suffix<|fim_middle|>`` as ids from the server's ``/tokenize``:
        the three FIM tokens by id, the code as text (a control string inside it stays text)."""
        marks = [self._tokenize(mark, True) for mark in FIM_TOKENS]
        parts = [self._tokenize(prefix, False), self._tokenize(suffix, False)]
        if any(m is None or len(m) != 1 for m in marks) or any(p is None for p in parts):
            raise RemoteServerError(f"the Granite server at {self.base_url} ignores `suffix` and could not give the "
                                    "ids of Granite's FIM tokens: fill-in-the-middle is not available there",
                                    fix="remote_status", url=self.base_url)
        return [*marks[0], *parts[0], *marks[1], *parts[1], *marks[2]]

    def _send(self, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except openai.OpenAIError as exc:
            raise overflow_advice(remote_error(exc, self.base_url, self.model, self.models), self.slots) from None

    def _read(self, chunks: Any, started: float, prompt_text: str, holder: list[GenerationResult],
              count: Callable[[], int] | None = None) -> Iterator[str]:
        text, calls, usage, finish = [], {}, None, None
        first = last = None
        try:
            for chunk in chunks:
                usage = chunk.usage or usage
                for choice in chunk.choices or []:
                    finish = choice.finish_reason or finish
                    delta = getattr(choice, "delta", None)  # chat; a completion choice has .text
                    for call in getattr(delta, "tool_calls", None) or []:
                        slot = calls.setdefault(call.index, {"name": "", "arguments": ""})
                        if call.function is not None:
                            slot["name"] += call.function.name or ""
                            slot["arguments"] += call.function.arguments or ""
                    piece = delta.content if delta is not None else getattr(choice, "text", None)
                    if piece and not text and piece.startswith(RANDOM_CONTENT_LABEL):
                        piece = piece[len(RANDOM_CONTENT_LABEL):]  # feldspar serve's display line; we label ourselves
                    if piece:
                        first = first or time.perf_counter()
                        last = time.perf_counter()
                        text.append(piece)
                        yield piece
        except (openai.OpenAIError, httpx.HTTPError) as exc:
            raise overflow_advice(remote_error(exc, self.base_url, self.model, self.models, midway=True),
                                  self.slots) from None
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        if finish is None:  # llama-cpp-python ends an interrupted answer with [DONE] and no finish_reason
            raise RemoteServerError(f"the Granite server at {self.base_url} ended the answer without a finish reason "
                                    f"(interrupted after {len(''.join(text))} characters); not an answer",
                                    fix="remote_status", url=self.base_url, retryable=True)
        rendered = [call_text(c["name"], c["arguments"]) for _, c in sorted(calls.items()) if c["name"]]
        if rendered:
            tail = ("\n" if text else "") + "\n".join(rendered)
            first, last = first or time.perf_counter(), time.perf_counter()
            text.append(tail)
            yield tail
        holder.append(self._result("".join(text), usage, finish, started, first, last, prompt_text, count))

    def _result(self, text: str, usage: Any, finish: str | None, started: float, first: float | None,
                last: float | None, prompt_text: str, count: Callable[[], int] | None = None) -> GenerationResult:
        ended = time.perf_counter()
        first = first or ended
        if usage is not None and usage.prompt_tokens:
            prompt_tokens, completion = int(usage.prompt_tokens), int(usage.completion_tokens or 0)
            details = getattr(usage, "prompt_tokens_details", None)
            reused = int(getattr(details, "cached_tokens", 0) or 0) if details is not None else 0
            self._calibrate(len(prompt_text), prompt_tokens)
        else:
            prompt_tokens = count() if count is not None else self.count_tokens(prompt_text)
            completion, reused = self.count_tokens(text), 0
        estimated = usage is None or not usage.prompt_tokens
        estimated = estimated and not (self.tokenizer is not None or self.prompt_ids is not None)
        reused = min(reused, prompt_tokens)
        return GenerationResult(estimated=estimated,
            text=text, prompt_tokens=prompt_tokens, completion_tokens=completion,
            finish_reason="length" if finish == "length" else "stop", reused_tokens=reused,
            computed_tokens=prompt_tokens - reused, prefill_s=first - started, ttft_s=first - started,
            decode_s=(last or first) - first)
