"""ChatGranite: a langchain-core chat model over any Feldspar chat backend.

``ChatGranite(backend=...)`` turns langchain messages into Granite chat dicts
(agents/messages.py), hands them with the bound tools (OpenAI schemas, passed to the
template natively as ``tools=``) and Granite ``documents=`` to the backend
(agents/backend.py: the local engine, the scripted backend, a remote server), and
turns the raw text back into an ``AIMessage``:

- content: the visible text, streamed as it is generated (``_stream`` yields chunks as
  the backend streams; tool-call text is never streamed, see model/toolcall_stream.py);
- ``tool_calls`` / ``invalid_tool_calls`` from ``parse_assistant(raw, tools)``: recovered
  shapes and schema checks included; an invalid call's ``args`` is the raw call text as a
  JSON string (so langchain never mistakes it for arguments) and, with ``invoke``, its ``error``
  is the message for the model (streamed chunks lose ``error``: read
  ``response_metadata["parse_errors"]``);
- ``usage_metadata``: input/output/total tokens, ``input_token_details.cache_read`` =
  reused tokens;
- ``response_metadata``: model_name, prompt_tokens, completion_tokens, reused_tokens,
  computed_tokens, ttft_s, prefill_s, decode_s, finish_reason ("tool_calls" when calls
  were parsed, else the backend's "stop"/"length"), random_weights, raw_text, repairs,
  parse_errors (id, name, kind, message, for_model, raw).

``invoke`` is the stream aggregated, so both give the same message. ``tool_choice``:
"none" hides the tools; Granite's template has no way to force a call, so other values are
accepted and recorded, not enforced. Torch-free: the backend is duck-typed.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterator, Literal, Sequence

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.chat_models import generate_from_stream
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field

from feldspar.agents.messages import to_granite_documents, to_granite_messages
from feldspar.agents.structured import STRUCTURE_KEYS, call_structure, structured_runnable
from feldspar.model.toolcall_stream import VisibleText
from feldspar.model.toolcalls import ParsedTurn, ToolCallError

_CALL_KEYS = ("max_new_tokens", "max_tokens", "temperature", "top_p", "seed", "reuse", "tools", "tool_choice",
              "documents", "model", *STRUCTURE_KEYS)


def invalid_call_args(error: ToolCallError) -> str:
    """The raw call text as a JSON string: langchain can never read it as valid arguments."""
    return json.dumps(error.raw, ensure_ascii=False)


def parse_error_record(error: ToolCallError) -> dict[str, Any]:
    return {"id": error.id, "name": error.name, "kind": error.kind, "message": error.message,
            "for_model": error.for_model(), "raw": error.raw}


class ChatGranite(BaseChatModel):
    """IBM Granite 4.0 as a langchain chat model, over a Feldspar chat backend."""

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True)

    backend: Any = Field(default=None, exclude=True)
    model_name: str | None = Field(default=None, alias="model")
    max_new_tokens: int = Field(default=512, ge=1, alias="max_tokens")
    temperature: float = Field(default=0.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None
    reuse: bool | None = None
    stop: list[str] | None = None
    documents: list[dict[str, Any]] | None = None
    streaming: bool = False

    # ---- langchain plumbing ----------------------------------------------------------------
    @property
    def _llm_type(self) -> str:
        return "granite-chat"

    @classmethod
    def is_lc_serializable(cls) -> bool:
        return True

    @classmethod
    def get_lc_namespace(cls) -> list[str]:
        return ["feldspar", "agents", "chat_model"]

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.resolved_model_name, "max_new_tokens": self.max_new_tokens,
                "temperature": self.temperature, "top_p": self.top_p, "seed": self.seed}

    @property
    def resolved_model_name(self) -> str:
        return self.model_name or getattr(self.backend, "name", None) or "granite"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any):
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "feldspar"
        params["ls_model_name"] = kwargs["model"] if isinstance(kwargs.get("model"), str) else self.resolved_model_name
        params["ls_max_tokens"] = kwargs.get("max_tokens") or kwargs.get("max_new_tokens") or self.max_new_tokens
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    def bind_tools(self, tools: Sequence[dict[str, Any] | type | Callable | BaseTool], *,
                   tool_choice: str | Literal["auto", "none", "any", "required"] | bool | dict | None = None,
                   **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (langchain tools, pydantic models, functions or OpenAI schemas) as OpenAI schemas."""
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        return super().bind(tools=formatted, tool_choice=tool_choice, **kwargs)

    def with_structured_output(self, schema: Any, *, method: str = "json_schema", include_raw: bool = False,
                               strict: bool | None = None, **kwargs: Any) -> Runnable:
        """Output parsed into ``schema`` (pydantic class, TypedDict or JSON Schema), decoding constrained
        to it: ``json_schema`` (default), ``function_calling`` (a forced tool call) or ``json_mode``.
        Constrained decoding is always strict, so ``strict`` changes nothing."""
        if kwargs:
            raise TypeError(f"with_structured_output got unexpected keyword argument(s): {', '.join(sorted(kwargs))}")
        return structured_runnable(self, schema, method, include_raw)

    # ---- token counting through the backend ---------------------------------------------------
    def get_num_tokens(self, text: str) -> int:
        return int(self._backend().count_tokens(text))

    def get_num_tokens_from_messages(self, messages: list[BaseMessage], tools: Sequence | None = None) -> int:
        return len(self.prompt_token_ids(messages, tools=tools))

    def prompt_token_ids(self, messages: Sequence[BaseMessage], tools: Sequence | None = None,
                         documents: Sequence[Any] | None = None) -> list[int]:
        """The exact ids the backend's model would see for these messages (untrusted text neutralised)."""
        formatted = [convert_to_openai_tool(t) for t in tools] if tools else None
        docs = to_granite_documents(documents if documents is not None else self.documents)
        return list(self._backend().prompt_token_ids(to_granite_messages(messages), formatted, docs))

    # ---- generation -------------------------------------------------------------------------
    def _backend(self) -> Any:
        if self.backend is None:
            raise ValueError("ChatGranite has no backend: pass backend=LocalChatBackend(engine) or "
                             "ScriptedBackend([...])")
        return self.backend

    def _request(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]):
        unknown = sorted(k for k in kwargs if k not in _CALL_KEYS and not k.startswith("ls_"))
        if unknown:
            raise TypeError(f"ChatGranite got unexpected keyword argument(s): {', '.join(unknown)}")
        tools = kwargs.get("tools") or None
        if kwargs.get("tool_choice") in ("none", False):
            tools = None
        documents = kwargs["documents"] if kwargs.get("documents") is not None else self.documents
        settings = {
            "max_new_tokens": kwargs.get("max_new_tokens") or kwargs.get("max_tokens") or self.max_new_tokens,
            "temperature": kwargs.get("temperature", self.temperature),
            "top_p": kwargs.get("top_p", self.top_p),
            "seed": kwargs.get("seed", self.seed),
            "reuse": kwargs.get("reuse", self.reuse),
        }
        stops = list(stop or []) or list(self.stop or [])
        if stops:
            settings["stop"] = stops
        structure = call_structure(kwargs, tools)
        if structure is not None and getattr(self._backend(), "constrains", False):
            settings["structure"] = structure  # a backend that cannot constrain: parsers validate what comes
        return to_granite_messages(messages), tools, to_granite_documents(documents), settings

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        granite, tools, documents, settings = self._request(messages, stop, kwargs)
        backend = self._backend()
        stream = backend.stream_chat(granite, tools, documents, **settings)
        visible = VisibleText(tools)
        for delta in stream:
            piece = visible.push(delta)
            if piece:
                yield self._emit(AIMessageChunk(content=piece), run_manager)
        result = stream.result
        rest, turn = visible.finish()
        final = AIMessageChunk(content=rest, tool_call_chunks=self._call_chunks(turn),
                               usage_metadata=self._usage(result),
                               response_metadata=self._metadata(backend, result, turn), chunk_position="last")
        yield self._emit(final, run_manager, rest,
                         generation_info={"finish_reason": final.response_metadata["finish_reason"]})

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        result = generate_from_stream(self._stream(messages, stop=stop, run_manager=run_manager, **kwargs))
        message = result.generations[0].message
        errors = {e["id"]: e["for_model"] for e in message.response_metadata.get("parse_errors", [])}
        if isinstance(message, AIMessage) and errors:
            message.invalid_tool_calls = [{**call, "error": errors.get(call["id"])} for call in message.invalid_tool_calls]
        return result

    @staticmethod
    def _emit(message: AIMessageChunk, run_manager: CallbackManagerForLLMRun | None, token: str | None = None,
              generation_info: dict[str, Any] | None = None) -> ChatGenerationChunk:
        chunk = ChatGenerationChunk(message=message, generation_info=generation_info)
        text = message.content if token is None else token
        if run_manager is not None and (text or generation_info):
            run_manager.on_llm_new_token(text if isinstance(text, str) else "", chunk=chunk)
        return chunk

    # ---- the final chunk ------------------------------------------------------------------------
    @staticmethod
    def _call_chunks(turn: ParsedTurn) -> list[dict[str, Any]]:
        chunks = [{"name": c.name, "args": json.dumps(c.arguments, ensure_ascii=False), "id": c.id, "index": i,
                   "type": "tool_call_chunk"} for i, c in enumerate(turn.calls)]
        chunks += [{"name": e.name, "args": invalid_call_args(e), "id": e.id, "index": len(turn.calls) + i,
                    "type": "tool_call_chunk"} for i, e in enumerate(turn.errors)]
        return chunks

    @staticmethod
    def _usage(result: Any) -> dict[str, Any]:
        return {"input_tokens": result.prompt_tokens, "output_tokens": result.completion_tokens,
                "total_tokens": result.prompt_tokens + result.completion_tokens,
                "input_token_details": {"cache_read": result.reused_tokens}}

    def _metadata(self, backend: Any, result: Any, turn: ParsedTurn) -> dict[str, Any]:
        return {
            "model_name": self.model_name or getattr(backend, "name", "granite"),
            "finish_reason": "tool_calls" if turn.calls else result.finish_reason,
            "prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
            "reused_tokens": result.reused_tokens, "computed_tokens": result.computed_tokens,
            "estimated_tokens": bool(getattr(result, "estimated", False)),
            "ttft_s": result.ttft_s, "prefill_s": result.prefill_s, "decode_s": result.decode_s,
            "random_weights": bool(getattr(backend, "random_weights", False)),
            "raw_text": result.text, "repairs": list(turn.repairs),
            "parse_errors": [parse_error_record(e) for e in turn.errors],
        }
