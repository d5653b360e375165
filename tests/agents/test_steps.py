"""One name per step: the graph's nodes, the trace's records and the streamed events agree (agents/steps.py).

The real graph runs on a scripted Granite model through every step (a mode note, a search, a
side-effecting tool approved and run, a long thread compacted); threads saved under the names of
earlier versions (nodes ``agent``/``tools``/``summarise``, records ``final``/``approval``/``mode``)
are read, and resumed, under today's.
"""

from __future__ import annotations

import json

from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel

from feldspar.agents.chat_model import ChatGranite
from feldspar.agents.configuration import AgentConfig
from feldspar.agents.nodes import AgentDeps, Nodes
from feldspar.agents.runner import Agent
from feldspar.agents.scripted import ScriptedBackend
from feldspar.agents.state import AgentState
from feldspar.agents.steps import ANSWER, APPROVAL_REQUEST, STEPS, TOKEN
from feldspar.agents.threads import ThreadStore
from feldspar.agents.tools import FeldsparTool, run_tool
from feldspar.agents.trace import format_trace

HIT = {"chunk_id": "c1", "path": "guide.md", "start": 0, "end": 40, "score": 1.0,
       "text": "Hold the reset button for ten seconds."}


class Note(BaseModel):
    text: str


def call(name: str, **arguments) -> str:
    return f'<tool_call>\n{json.dumps({"name": name, "arguments": arguments})}\n</tool_call>'


def agent_with(replies: list[str], threads: ThreadStore | None = None, **config) -> tuple[Agent, list]:
    saved: list = []
    note = FeldsparTool(name="save_note", description="Save a note.", args_schema=Note,
                        func=lambda text: saved.append(text) or "saved", side_effects=True)
    model = ChatGranite(backend=ScriptedBackend(replies, context_window=1000))
    deps = AgentDeps(chat_model=model, config=AgentConfig(**{"max_new_tokens": 64, **config}),
                     search=lambda query, k: [HIT], tools=[note],
                     run_tool=lambda tool, args: run_tool(tool, args).to_dict(),
                     mode_note={"mode": "retrieval", "why": "a test"}, context_window=1000,
                     count_tokens=lambda m, t, d: len(model.prompt_token_ids(m, t, d)))
    return Agent(deps, threads), saved


def test_the_graph_the_trace_and_the_events_use_the_same_step_names(tmp_path):
    replies = [call("save_note", text="10 s"), "Saved [1].", "SUMMARY: a reset note was saved.",
               "Two years [2]."]
    agent, saved = agent_with(replies, ThreadStore(tmp_path / "threads.sqlite"), approve="always",
                              summary_share=0.5, keep_last_turns=1)
    events = list(agent.stream("How do I reset the router? Save a note of it, " + "please " * 40))
    thread = events[0].thread_id
    events += list(agent.stream("And the warranty? " + "please " * 60, thread))  # past the budget: compacted
    assert saved == ["10 s"]
    nodes = set(agent.graph.get_graph().nodes) - {START, END}
    steps = {record["node"] for record in agent.threads.values(thread)["trace"]}
    kinds = {event.kind for event in events} - {TOKEN, ANSWER, APPROVAL_REQUEST}
    assert nodes == steps == kinds == set(STEPS)


def old_graph(deps: AgentDeps, checkpointer):
    """The graph as earlier versions named it, from today's nodes: threads it saved must still open."""
    nodes, old = Nodes(deps), {"model": "agent", "tool": "tools", "compact": "summarise"}
    rename = lambda route: lambda state: old.get(route(state), route(state))  # noqa: E731
    graph = StateGraph(AgentState)
    for name, run in (("begin", nodes.begin), ("retrieve", nodes.retrieve), ("summarise", nodes.compact),
                      ("agent", nodes.model), ("approve", nodes.approve), ("tools", nodes.tool),
                      ("finalize", nodes.finalize)):
        graph.add_node(name, run)
    graph.add_edge(START, "begin")
    graph.add_conditional_edges("begin", rename(nodes.route_begin), ["retrieve", "summarise"])
    graph.add_edge("retrieve", "summarise")
    graph.add_conditional_edges("summarise", rename(nodes.route_compact), ["agent", "finalize"])
    graph.add_conditional_edges("agent", rename(nodes.route_model), ["approve", "finalize"])
    graph.add_edge("approve", "tools")
    graph.add_edge("tools", "summarise")
    graph.add_edge("finalize", END)
    return graph.compile(checkpointer=checkpointer)


def test_a_thread_saved_under_the_old_names_is_resumed_and_read_under_the_new(tmp_path):
    path = tmp_path / "threads.sqlite"
    before, _ = agent_with([call("save_note", text="hi")], ThreadStore(path), approve="ask")
    before.graph = old_graph(before.deps, before.threads.saver)
    waiting = before.ask("Save a note.")
    assert waiting["stop_reason"] == "awaiting_approval"  # paused in the old graph
    thread = waiting["thread_id"]
    after, saved = agent_with(["Noted [1]."], ThreadStore(path), approve="ask")
    events = list(after.stream(None, thread, resume=True))
    assert saved == ["hi"] and after.result(thread)["text"] == "Noted [1]."
    assert [e.kind for e in events if e.kind in STEPS] == ["approve", "tool", "model", "finalize"]
    old_records = [{"turn": 1, "node": "mode", "mode": "pack", "why": "it fits"},
                   {"turn": 1, "node": "summarise", "messages": 2, "tokens_before": 900, "tokens_after": 300},
                   {"turn": 1, "node": "approval", "name": "save_note", "approved": True, "how": "ask"},
                   {"turn": 1, "node": "final", "stop_reason": "answered", "cited": [1]}]
    after.graph.update_state(after.config(thread), {"trace": old_records})  # as an earlier version wrote them
    trace = after.threads.values(thread)["trace"]
    assert [r["node"] for r in trace][-4:] == ["begin", "compact", "approve", "finalize"]
    assert {r["node"] for r in trace} == set(STEPS) and len(trace) == 7 + len(old_records)
    shown = format_trace(old_records).splitlines()  # and shown under them, however they were read
    assert [line.split("] ")[1].split()[0] for line in shown] == ["begin", "compact", "approve", "finalize"]
