"""Your own LangGraph graph over Feldspar's chat model (ChatGranite) and a tool of your own.

    python examples/custom_graph.py [--home DIR] [--model PATH]

`fs.chat_model` is a langchain-core chat model: bind tools to it and use it in any graph;
`fs.graph` is Feldspar's own compiled agent graph, for comparison.
"""

from __future__ import annotations

from _common import parse_args, scripted_model
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from feldspar import Feldspar


@tool
def mohs_hardness(mineral: str) -> float:
    """Mohs hardness of a mineral (quartz, feldspar or mica)."""
    return {"quartz": 7.0, "feldspar": 6.0, "mica": 2.5}.get(mineral.lower(), -1.0)


CALL = '<tool_call>\n{"name": "mohs_hardness", "arguments": {"mineral": "feldspar"}}\n</tool_call>'


def main() -> None:
    args = parse_args(__doc__)
    chat_model = scripted_model([CALL, "Feldspar has a Mohs hardness of 6."], args.model)
    fs = Feldspar(home=args.home, model=args.model, chat_model=chat_model, policy="none", max_new_tokens=48)
    model = fs.chat_model.bind_tools([mohs_hardness])

    def agent(state: MessagesState) -> dict:
        return {"messages": [model.invoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode([mohs_hardness]))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    graph = builder.compile()

    result = graph.invoke({"messages": [HumanMessage("How hard is feldspar?")]})
    for message in result["messages"]:
        calls = getattr(message, "tool_calls", None)
        print(f"{message.type}: {message.content[:80]!r}" + (f" calls {[c['name'] for c in calls]}" if calls else ""))
    if fs.chat_model.backend.random_weights:
        print("[RANDOM WEIGHTS: the model's text above is noise from an untrained test model]")
    print("Feldspar's own graph has nodes:", sorted(n for n in fs.graph.get_graph().nodes if not n.startswith("__")))


if __name__ == "__main__":
    main()
