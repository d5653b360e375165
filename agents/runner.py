"""Run the agent graph on threads and turn what happens into typed events.

``Agent.stream(question, thread_id)`` yields ``AgentEvent``s — one per trace record, its
``kind`` the step's name (agents/steps.py: begin, retrieve, compact, model, approve, tool,
finalize), plus streamed ``token``s, an ``approval_request`` when a side-effecting tool waits
and the ``answer`` — the same events the CLI, the UI and the Python API show.
``Agent.ask`` runs a question to its answer, asking an ``approve`` callback when a
side-effecting tool wants to run (without one, the turn waits for approval and the
answer says so). Optional ``state_hooks`` restore a thread's saved model state before its
first turn in this process and save it after each turn (the app wires them to the
engine). Knows LangGraph streaming and the graph; nothing of torch or stores.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator

from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from feldspar.agents.graph import build_graph
from feldspar.agents.nodes import AgentDeps
from feldspar.agents.threads import ThreadStore, new_thread_id
from feldspar.agents.steps import ANSWER, APPROVAL_REQUEST, FINALIZE, MODEL, TOKEN
from feldspar.agents.trace import turn_steps
from feldspar.model.text_checks import check_text

@dataclass
class AgentEvent:
    """One thing that happened: ``kind`` says what (a step's name, or token, approval_request, answer),
    ``data`` holds the trace record or the answer, ``text`` a token's text."""

    kind: str  # one of steps.STEPS, or TOKEN | APPROVAL_REQUEST | ANSWER
    thread_id: str
    data: dict[str, Any] = field(default_factory=dict)
    text: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Agent:
    def __init__(self, deps: AgentDeps, threads: ThreadStore | None = None, meta: dict[str, Any] | None = None,
                 state_hooks: Any = None) -> None:
        self.deps = deps
        self.threads = threads
        self.meta = meta or {}
        self.state_hooks = state_hooks  # restore(thread_id) before a turn, save(thread_id) after one (adapters.EngineThreadStates)
        self.graph = build_graph(deps, threads.saver if threads else InMemorySaver())

    @staticmethod
    def config(thread_id: str, generation: dict[str, Any] | None = None) -> dict[str, Any]:
        configurable: dict[str, Any] = {"thread_id": thread_id}
        if generation:
            configurable["generation"] = dict(generation)
        return {"configurable": configurable, "recursion_limit": 200}

    def stream(self, question: str | None, thread_id: str | None = None, resume: Any = None,
               generation: dict[str, Any] | None = None) -> Iterator[AgentEvent]:
        """Events of one question on a new thread (no id) or an existing one (or of resuming an approval);
        ``generation`` overrides the model calls' settings for this turn (max_new_tokens, temperature,
        top_p, seed, stop)."""
        if thread_id is None:
            thread_id = new_thread_id()
        elif self.threads is not None:
            self.threads.require(thread_id)
        return self._run(question, thread_id, resume, generation)

    def _run(self, question: str | None, thread_id: str, resume: Any = None,
             generation: dict[str, Any] | None = None) -> Iterator[AgentEvent]:
        if self.state_hooks is not None:
            self.state_hooks.restore(thread_id)
        if question is not None:
            check_text(question, "question")  # before anything is stored: a store cannot hold a lone surrogate
            self._record_turn(thread_id, question)  # listed from its first step on, even if killed mid-turn
        payload: Any = Command(resume=resume) if resume is not None else {"question": question or ""}
        # durability="sync": each step's checkpoint is on disk before the next step starts, so a kill -9
        # mid-tool leaves the thread at its last completed step (the default, "async", may lose it).
        for mode, chunk in self.graph.stream(payload, self.config(thread_id, generation), stream_mode=["messages", "updates"],
                                             durability="sync"):
            yield from self._events(mode, chunk, thread_id)
        self._record_turn(thread_id)
        if self.state_hooks is not None and self.pending_approval(thread_id) is None:
            self.state_hooks.save(thread_id)

    def _events(self, mode: str, chunk: Any, thread_id: str) -> Iterator[AgentEvent]:
        if mode == "messages":
            message, metadata = chunk
            if metadata.get("langgraph_node") == MODEL and isinstance(message.content, str) and message.content:
                yield AgentEvent(TOKEN, thread_id, text=message.content)
            return
        for node, update in chunk.items():
            if node == "__interrupt__":
                for pending in update:
                    yield AgentEvent(APPROVAL_REQUEST, thread_id, data=dict(pending.value))
                continue
            for record in (update or {}).get("trace", []) if isinstance(update, dict) else []:
                yield AgentEvent(record["node"], thread_id, data=record)
            if node == FINALIZE and isinstance(update, dict) and update.get("answer"):
                yield AgentEvent(ANSWER, thread_id, data=update["answer"], text=update["answer"]["text"])

    def _record_turn(self, thread_id: str, question: str | None = None) -> None:
        if self.threads is None:
            return
        values = self.graph.get_state(self.config(thread_id)).values
        first = next((m.content for m in values.get("messages", []) if isinstance(m, HumanMessage)), question or "")
        self.threads.touch(thread_id, str(first), turns=values.get("turn", 0), **self.meta)

    def pending_approval(self, thread_id: str) -> dict[str, Any] | None:
        state = self.graph.get_state(self.config(thread_id))
        for task in state.tasks:
            for pending in task.interrupts:
                return dict(pending.value)
        return None

    def ask(self, question: str, thread_id: str | None = None,
            approve: Callable[[dict[str, Any]], bool] | None = None,
            on_event: Callable[[AgentEvent], None] | None = None) -> dict[str, Any]:
        """Run one question to its answer; returns the answer with thread id, trace and usage."""
        if thread_id is not None and self.threads is not None:
            self.threads.require(thread_id)
        thread_id = thread_id or new_thread_id()
        events = self._run(question, thread_id)
        while True:
            for event in events:
                if on_event:
                    on_event(event)
            request = self.pending_approval(thread_id)
            if request is None or approve is None:
                break
            events = self._run(None, thread_id, resume=bool(approve(request)))
        return self.result(thread_id)

    def result(self, thread_id: str) -> dict[str, Any]:
        values = self.graph.get_state(self.config(thread_id)).values
        pending = self.pending_approval(thread_id)
        answer = dict(values.get("answer") or {})
        if pending is not None:
            answer = {"text": "", "sources": [], "stop_reason": "awaiting_approval", "pending_approval": pending}
        turn = values.get("turn", 0)
        return {**answer, "thread_id": thread_id, "trace": turn_steps(values.get("trace", []), turn)}
