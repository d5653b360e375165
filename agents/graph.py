"""The Feldspar agent graph: retrieval, model turns, approved tool calls, summaries, a cited answer.

One question runs: begin → (retrieve, with policy ``always``) → compact (condenses older turns
only when the thread passes its budget) → model → approve → tool → compact → model … → finalize.
The step names (agents/steps.py) are the same in the graph, the trace and the streamed events.
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
from feldspar.agents.steps import APPROVE, BEGIN, COMPACT, FINALIZE, MODEL, RETRIEVE, TOOL


def build_graph(deps: AgentDeps, checkpointer: Any = None):
    """The compiled graph; pass a LangGraph checkpointer for threads and approvals."""
    nodes = Nodes(deps)
    graph = StateGraph(AgentState)
    graph.add_node(BEGIN, nodes.begin)
    graph.add_node(RETRIEVE, nodes.retrieve)
    graph.add_node(COMPACT, nodes.compact)
    graph.add_node(MODEL, nodes.model)
    graph.add_node(APPROVE, nodes.approve)
    graph.add_node(TOOL, nodes.tool)
    graph.add_node(FINALIZE, nodes.finalize)
    graph.add_edge(START, BEGIN)
    graph.add_conditional_edges(BEGIN, nodes.route_begin, [RETRIEVE, COMPACT])
    graph.add_edge(RETRIEVE, COMPACT)
    graph.add_conditional_edges(COMPACT, nodes.route_compact, [MODEL, FINALIZE])
    graph.add_conditional_edges(MODEL, nodes.route_model, [APPROVE, FINALIZE])
    graph.add_edge(APPROVE, TOOL)
    graph.add_edge(TOOL, COMPACT)
    graph.add_edge(FINALIZE, END)
    return graph.compile(checkpointer=checkpointer)
