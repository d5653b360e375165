"""The agent's nodes: begin, retrieve, compact, model, approve, tool, finalize (names: agents/steps.py).

Each node takes the graph state and returns an update; the routing functions read the
state and name the next node. Prompt layout is cache-aware: the system prompt and tool
list come first and never change, pack documents follow, then the thread, which only
grows — retrieved passages enter as the response of a ``search_documents`` call, never by
rewriting an earlier turn, so a follow-up question resumes from the saved model state.
Tool errors, unknown tools, bad arguments and refused approvals go back to the model as
tool messages; the stop conditions (max steps, max tool calls, a repeated call, the
context window) end the turn with an answer that says why. Knows langchain-core messages,
LangGraph's interrupt and the dependencies it is handed (``AgentDeps``; the implementations the
app wires in are named classes in agents/adapters.py); nothing of torch or stores.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.types import interrupt

from feldspar.agents import prompts
from feldspar.agents.builtin_tools import SEARCH_DOCUMENTS, search_documents_tool
from feldspar.agents.citations import number_passages, passages_for_model, resolve_citations, strip_unknown
from feldspar.agents.configuration import AgentConfig
from feldspar.agents.state import AgentState
from feldspar.agents.steps import APPROVE, BEGIN, COMPACT, FINALIZE, MODEL, RETRIEVE, TOOL
from feldspar.agents.trace import step

Search = Callable[[str, int], list[dict]]
CountTokens = Callable[[list[AnyMessage], list[dict] | None, list[dict] | None], int]
RunTool = Callable[[Any, dict], dict]  # (tool, args) -> {"arguments", "result", "error", "timed_out", …}


def rough_token_count(messages: list[AnyMessage], tools: list[dict] | None, documents: list[dict] | None) -> int:
    """About four characters a token: the fallback when the backend cannot count exactly."""
    text = "".join(str(m.content) for m in messages) + json.dumps(tools or []) + json.dumps(documents or [])
    return len(text) // 4 + 8 * len(messages)


@dataclass
class AgentDeps:
    """What the graph is handed by the composition root (or a script)."""

    chat_model: Any                                  # a langchain BaseChatModel, e.g. ChatGranite
    config: AgentConfig = field(default_factory=AgentConfig)
    search: Search | None = None                     # hybrid search of the collection (adapters.CollectionSearch)
    tools: Sequence[Any] = ()                        # FeldsparTool-likes: name, side_effects, openai_schema()
    run_tool: RunTool | None = None                  # never raises; adapters.run_tool_record
    pack_documents: list[dict] | None = None         # Granite documents of an attached state pack
    mode_note: dict | None = None                    # why this retrieval mode was chosen (traced every turn)
    context_window: int = 131072
    count_tokens: CountTokens = rough_token_count    # exact: adapters.PromptTokenCounter

    def tool_named(self, name: str) -> Any | None:
        return next((t for t in self.tools if t.name == name), None)


def call_signature(call: dict) -> str:
    return f"{call['name']}({json.dumps(call.get('args', {}), sort_keys=True, default=str)})"


class Nodes:
    def __init__(self, deps: AgentDeps) -> None:
        self.deps = deps
        self.config = deps.config
        self.search_tool = search_documents_tool(deps.search, self.config.k) if deps.search else None

    # ---- prompt layout ---------------------------------------------------------------
    @property
    def pack_mode(self) -> bool:
        return self.config.policy == "pack" and bool(self.deps.pack_documents)

    def tool_schemas(self) -> list[dict] | None:
        offered = self.search_tool is not None and self.config.policy in ("always", "auto")
        schemas = [self.search_tool.openai_schema()] if offered else []
        schemas += [t.openai_schema() for t in self.deps.tools if t.name != SEARCH_DOCUMENTS]
        return schemas or None

    def documents(self) -> list[dict] | None:
        return self.deps.pack_documents if self.pack_mode else None

    def prompt_messages(self, state: AgentState) -> list[AnyMessage]:
        head: list[AnyMessage] = [] if self.pack_mode else [SystemMessage(self.config.system_prompt or prompts.SYSTEM)]
        if state.get("summary"):
            head.append(SystemMessage(prompts.SUMMARY_PREFIX + state["summary"]))
        return head + list(state.get("messages", []))[state.get("summary_upto", 0):]

    def prompt_tokens(self, messages: list[AnyMessage]) -> int:
        return self.deps.count_tokens(messages, self.tool_schemas(), self.documents())

    # ---- nodes -----------------------------------------------------------------------
    def begin(self, state: AgentState) -> dict:
        question = state.get("question", "")
        turn = state.get("turn", 0) + 1
        content = f"{question}\n\n{prompts.PACK_CITATION_NOTE}" if self.pack_mode else question
        update: dict[str, Any] = {"turn": turn, "steps": 0, "tool_calls": 0, "seen_calls": [], "approvals": {},
                                  "stop_reason": None, "answer": None, "messages": [HumanMessage(content)], "trace": []}
        if self.deps.mode_note:
            with step(BEGIN, turn, **self.deps.mode_note) as record:
                pass
            update["trace"] = [record]
        if self.pack_mode and not state.get("passages"):
            update["passages"] = number_passages(
                ({**d, "path": d.get("source") or d.get("title"), "start": 0, "end": len(d.get("text", ""))}
                 for d in self.deps.pack_documents or []), first_id=1)
            update["next_doc_id"] = len(update["passages"]) + 1
        return update

    def search(self, state: AgentState, query: str, mode: str) -> tuple[dict, str, dict]:
        """Run one search: (new passages, the tool response text, trace record).

        A chunk already shown earlier in the thread is not repeated: the response points at
        its doc_id instead, so the thread (and its saved state) does not grow twice for it.
        """
        with step(RETRIEVE, state.get("turn", 1), query=query, mode=mode) as record:
            hits = self.deps.search(query, self.config.k) if self.deps.search else []
            known = {p.get("chunk_id"): p for p in state.get("passages", {}).values() if p.get("chunk_id")}
            passages = number_passages([h for h in hits if h.get("chunk_id") not in known], state.get("next_doc_id", 1))
            again = [known[h["chunk_id"]] for h in hits if h.get("chunk_id") in known]
            record["hits"] = [{**{k: p.get(k) for k in ("doc_id", "path", "page", "start", "end", "heading", "score")},
                               "repeat": p in again} for p in [*passages.values(), *again]]
        return passages, passages_for_model(passages, [p["doc_id"] for p in again]), record

    def retrieve(self, state: AgentState) -> dict:
        query = state.get("question", "")
        passages, text, record = self.search(state, query, mode="policy always")
        return {"messages": search_messages(query, text, f"search_{uuid.uuid4().hex[:10]}"), "passages": passages,
                "next_doc_id": state.get("next_doc_id", 1) + len(passages), "trace": [record]}

    def compact(self, state: AgentState) -> dict:
        """Condense the older turns into a summary when the prompt passes its share of the window."""
        messages = self.prompt_messages(state)
        tokens = self.prompt_tokens(messages)
        budget = int(self.deps.context_window * self.config.summary_share)
        cut = self.summary_cut(state)
        if tokens <= budget or cut is None:
            return self.check_window(tokens)
        older = list(state["messages"])[state.get("summary_upto", 0):cut]
        request = self.prompt_messages({**state, "messages": older, "summary_upto": 0})
        request.append(HumanMessage(prompts.SUMMARY_REQUEST))
        if self.deps.count_tokens(request, None, None) + self.config.max_new_tokens > self.deps.context_window:
            return self.check_window(tokens)  # the older turns alone no longer fit: nothing to summarise with
        with step(COMPACT, state.get("turn", 1), tokens_before=tokens) as record:
            reply = self.deps.chat_model.invoke(request, max_new_tokens=self.config.max_new_tokens)
            summary = str(reply.content).strip()
            after = self.prompt_messages({**state, "summary": summary, "summary_upto": cut})
            record.update(messages=len(older), tokens_after=self.prompt_tokens(after), summary=summary)
        return {"summary": summary, "summary_upto": cut, "trace": [record], **self.check_window(record["tokens_after"])}

    def summary_cut(self, state: AgentState) -> int | None:
        """Index of the first message kept verbatim: the start of the last few user turns."""
        messages = list(state.get("messages", []))
        starts = [i for i, m in enumerate(messages) if isinstance(m, HumanMessage) and i >= state.get("summary_upto", 0)]
        if len(starts) <= self.config.keep_last_turns:
            return None
        return starts[-self.config.keep_last_turns] if self.config.keep_last_turns else len(messages)

    def check_window(self, tokens: int) -> dict:
        if tokens + self.config.max_new_tokens <= self.deps.context_window:
            return {}
        note = prompts.stop_note("context_window", tokens=tokens, window=self.deps.context_window)
        return {"stop_reason": "context_window", "messages": [AIMessage(content=note)]}

    def model(self, state: AgentState, config: RunnableConfig) -> dict:
        messages = self.prompt_messages(state)
        schemas = self.tool_schemas()
        model = self.deps.chat_model.bind_tools(schemas) if schemas else self.deps.chat_model
        with step(MODEL, state.get("turn", 1)) as record:
            options: dict[str, Any] = {"max_new_tokens": self.config.max_new_tokens,
                                       **((config or {}).get("configurable", {}).get("generation") or {})}
            if self.documents():
                options["documents"] = self.documents()
            reply = model.invoke(messages, **options)
            record.update(model_record(reply))
        update: dict[str, Any] = {"messages": [reply], "steps": state.get("steps", 0) + 1, "trace": [record]}
        stop = self.stop_reason(state, reply)
        if stop:
            update["stop_reason"] = stop[0]
            update["messages"] = [reply, AIMessage(content=stop[1])]
        return update

    def stop_reason(self, state: AgentState, reply: AIMessage) -> tuple[str, str] | None:
        calls = list(reply.tool_calls or [])
        if not calls and not reply.invalid_tool_calls:
            return None
        if state.get("steps", 0) + 1 >= self.config.max_steps:
            return "max_steps", prompts.stop_note("max_steps", limit=self.config.max_steps)
        if state.get("tool_calls", 0) + len(calls) > self.config.max_tool_calls:
            return "max_tool_calls", prompts.stop_note("max_tool_calls", limit=self.config.max_tool_calls)
        seen = set(state.get("seen_calls", []))
        for call in calls:
            if call_signature(call) in seen:
                return "repeated_call", prompts.stop_note("repeated_call", call=call_signature(call))
        return None

    def approve(self, state: AgentState) -> dict:
        approvals, records = {}, []
        for call in last_ai(state).tool_calls or []:
            tool = self.deps.tool_named(call["name"])
            if tool is None or not getattr(tool, "side_effects", False):
                continue
            with step(APPROVE, state.get("turn", 1), name=call["name"], args=call.get("args"),
                      how=self.config.approve) as record:
                if self.config.approve == "ask":
                    decision = interrupt({"type": "approval", "tool": call["name"], "args": call.get("args", {}),
                                          "id": call["id"], "description": getattr(tool, "description", "")})
                    approved = decision is True or str(decision).strip().lower() in ("y", "yes", "true", "approve")
                else:
                    approved = self.config.approve == "always"
                record["approved"] = approvals[call["id"]] = approved
            records.append(record)
        return {"approvals": approvals, "trace": records}

    def tool(self, state: AgentState) -> dict:
        reply = last_ai(state)
        out: list[AnyMessage] = []
        update: dict[str, Any] = {"passages": {}, "trace": []}
        next_id = state.get("next_doc_id", 1)
        for call in reply.tool_calls or []:
            if call["name"] == SEARCH_DOCUMENTS and self.deps.search:
                seen = {**state.get("passages", {}), **update["passages"]}
                passages, text, record = self.search({**state, "passages": seen, "next_doc_id": next_id},
                                                     str(call.get("args", {}).get("query", "")), mode="tool call")
                next_id += len(passages)
                update["passages"].update(passages)
                update["trace"].append(record)
                out.append(ToolMessage(text, tool_call_id=call["id"], name=call["name"]))
                continue
            content, record = self.run_call(state, call)
            update["trace"].append(record)
            out.append(ToolMessage(content, tool_call_id=call["id"], name=call["name"]))
        reasons = {e.get("id"): e.get("for_model") for e in (reply.response_metadata or {}).get("parse_errors", [])}
        for bad in reply.invalid_tool_calls or []:
            message = bad.get("error") or reasons.get(bad.get("id")) or "the tool call could not be parsed"
            message = message if message.startswith("Error") else f"Error: {message}"
            out.append(ToolMessage(message, tool_call_id=bad.get("id") or f"invalid_{uuid.uuid4().hex[:8]}",
                                   name=bad.get("name") or "unknown", status="error"))
        calls = reply.tool_calls or []
        update.update(messages=out, next_doc_id=next_id, tool_calls=state.get("tool_calls", 0) + len(calls),
                      seen_calls=list(state.get("seen_calls", [])) + [call_signature(c) for c in calls])
        return update

    def run_call(self, state: AgentState, call: dict) -> tuple[str, dict]:
        """Run one validated call (or explain why not); returns (text for the model, trace record)."""
        with step(TOOL, state.get("turn", 1), name=call["name"], args=call.get("args", {})) as record:
            tool = self.deps.tool_named(call["name"])
            if tool is None:
                known = ", ".join(s["function"]["name"] for s in self.tool_schemas() or []) or "none"
                record["error"] = f"unknown tool {call['name']!r}; available tools: {known}"
            elif getattr(tool, "side_effects", False) and not state.get("approvals", {}).get(call["id"]):
                record["error"] = f"{call['name']} was not run: the user did not approve this side-effecting call"
            elif self.deps.run_tool is None:
                record["error"] = "no tool runner is configured"
            else:
                outcome = self.deps.run_tool(tool, dict(call.get("args") or {}))
                record.update(args=outcome.get("arguments", record["args"]), result=outcome.get("result"),
                              error=outcome.get("error"), timed_out=bool(outcome.get("timed_out")))
        text = f"Error: {record['error']}" if record.get("error") else str(record.get("result"))
        return text, record

    def finalize(self, state: AgentState) -> dict:
        with step(FINALIZE, state.get("turn", 1)) as record:
            text = final_text(state)
            sources, unknown = resolve_citations(text, state.get("passages", {}))
            text = strip_unknown(text, unknown)
            answer = {"text": text, "sources": sources, "unknown_citations": unknown,
                      "stop_reason": state.get("stop_reason") or "answered", "turn": state.get("turn", 1),
                      "usage": turn_usage(state.get("trace", []), state.get("turn", 1))}
            record.update(stop_reason=answer["stop_reason"], cited=[s["doc_id"] for s in sources], unknown_ids=unknown)
        return {"answer": answer, "trace": [record]}

    # ---- routing ---------------------------------------------------------------------
    def route_begin(self, state: AgentState) -> str:
        return RETRIEVE if self.config.policy == "always" and self.deps.search else COMPACT

    @staticmethod
    def route_compact(state: AgentState) -> str:
        return FINALIZE if state.get("stop_reason") else MODEL

    @staticmethod
    def route_model(state: AgentState) -> str:
        reply = last_ai(state)
        if state.get("stop_reason") or not (reply.tool_calls or reply.invalid_tool_calls):
            return FINALIZE
        return APPROVE


def search_messages(query: str, text: str, call_id: str) -> list[AnyMessage]:
    """What the ``retrieve`` step adds to the thread: a ``search_documents`` call and its response."""
    call = AIMessage(content="", tool_calls=[{"name": SEARCH_DOCUMENTS, "args": {"query": query}, "id": call_id}])
    return [call, ToolMessage(text, tool_call_id=call_id, name=SEARCH_DOCUMENTS)]


def last_ai(state: AgentState) -> AIMessage:
    return next(m for m in reversed(state["messages"]) if isinstance(m, AIMessage))


def final_text(state: AgentState) -> str:
    """The turn's answer: the model's last words, plus the stop note when it was stopped."""
    turn_messages = []
    for message in reversed(state.get("messages", [])):
        if isinstance(message, HumanMessage):
            break
        turn_messages.append(message)
    texts = [str(m.content).strip() for m in reversed(turn_messages) if isinstance(m, AIMessage) and str(m.content).strip()]
    if state.get("stop_reason") and len(texts) > 1:
        return texts[-2] + "\n\n" + texts[-1]
    return texts[-1] if texts else ""


def model_record(reply: AIMessage) -> dict:
    meta = reply.response_metadata or {}
    usage = reply.usage_metadata or {}
    return {
        "prompt_tokens": meta.get("prompt_tokens", usage.get("input_tokens")),
        "reused_tokens": meta.get("reused_tokens", (usage.get("input_token_details") or {}).get("cache_read", 0)),
        "computed_tokens": meta.get("computed_tokens"), "completion_tokens": usage.get("output_tokens"),
        "ttft_s": meta.get("ttft_s"), "decode_s": meta.get("decode_s"), "finish_reason": meta.get("finish_reason"),
        "estimated_tokens": bool(meta.get("estimated_tokens")),
        "raw_text": meta.get("raw_text", reply.content), "random_weights": bool(meta.get("random_weights")),
        "tool_calls": [{"name": c["name"], "args": c.get("args"), "id": c.get("id")} for c in reply.tool_calls or []],
        "repairs": list(meta.get("repairs") or []), "parse_errors": [e.get("error") for e in reply.invalid_tool_calls or []],
    }


def turn_usage(trace: list[dict], turn: int) -> dict:
    models = [s for s in trace if s.get("turn") == turn and s.get("node") == MODEL]
    total = lambda key: sum(int(s.get(key) or 0) for s in models)  # noqa: E731
    return {"model_calls": len(models), "prompt_tokens": total("prompt_tokens"), "reused_tokens": total("reused_tokens"),
            "computed_tokens": total("computed_tokens"), "completion_tokens": total("completion_tokens"),
            "ttft_s": models[0].get("ttft_s") if models else None,
            "estimated_tokens": any(s.get("estimated_tokens") for s in models),
            "finish_reason": models[-1].get("finish_reason") if models else None,
            "random_weights": any(s.get("random_weights") for s in models)}
