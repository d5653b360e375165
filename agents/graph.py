"""The Feldspar agent graph: retrieval, model turns, approved tool calls, summaries, a cited answer.

One question runs: begin → (retrieve, with policy ``always``) → summarise (only when the
thread passes its budget) → agent → approve → tools → summarise → agent … → finalize.
Assembly is at the bottom, one line per node and edge. Knows LangGraph and the nodes;
what the nodes are handed (model, search, tools, pack) comes from ``AgentDeps``, and the app's
implementations of it (search adapter, token counter, tool runner, thread-state hooks) are the
named classes of agents/adapters.py.
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph

from feldspar.agents.nodes import AgentDeps, Nodes
from feldspar.agents.state import AgentState


def build_graph(deps: AgentDeps, checkpointer: Any = None):
    """The compiled graph; pass a LangGraph checkpointer for threads and approvals."""
    nodes = Nodes(deps)
    graph = StateGraph(AgentState)
    graph.add_node("begin", nodes.begin)
    graph.add_node("retrieve", nodes.retrieve)
    graph.add_node("summarise", nodes.summarise)
    graph.add_node("agent", nodes.agent)
    graph.add_node("approve", nodes.approve)
    graph.add_node("tools", nodes.tools)
    graph.add_node("finalize", nodes.finalize)
    graph.add_edge(START, "begin")
    graph.add_conditional_edges("begin", nodes.route_begin, ["retrieve", "summarise"])
    graph.add_edge("retrieve", "summarise")
    graph.add_conditional_edges("summarise", nodes.route_summarise, ["agent", "finalize"])
    graph.add_conditional_edges("agent", nodes.route_agent, ["approve", "finalize"])
    graph.add_edge("approve", "tools")
    graph.add_edge("tools", "summarise")
    graph.add_edge("finalize", END)
    return graph.compile(checkpointer=checkpointer)
