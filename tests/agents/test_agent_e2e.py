"""The whole agent on a tiny random Granite checkpoint: structure, reuse, threads, the CLI.

Random weights make the text noise, so the checks are structural: passages in the prompt
ids, a complete trace, reuse statistics, threads and their model state persisted.
"""

from __future__ import annotations

import json

import pytest

from tests.app.cli_runner import run_cli

from feldspar.compose import build_agent, build_engine
from feldspar.settings import load_settings


@pytest.fixture(scope="module")
def settings(collection_service, tiny_checkpoint):
    return load_settings(home=collection_service.config.home, collection="docs", model=str(tiny_checkpoint),
                         device="cpu", dtype="float32", max_new_tokens=6, prefill_chunk=64)


@pytest.fixture(scope="module")
def engine(settings):
    return build_engine(settings)


def test_two_turns_ground_the_prompt_reuse_state_and_persist_the_thread(settings, engine):
    agent = build_agent(settings, engine, approve="never")
    first = agent.ask("How do I reset the router?")
    assert [s["node"] for s in first["trace"]] == ["retrieve", "model", "finalize"]
    prompt = engine.tokenizer.decode(engine.last_prompt_ids)
    hit = first["trace"][0]["hits"][0]
    assert hit["path"] in prompt and "search_documents" in prompt
    model_step = first["trace"][1]
    assert model_step["random_weights"] is True and model_step["prompt_tokens"] == len(engine.last_prompt_ids)
    second = agent.ask("And the warranty?", first["thread_id"])
    follow = second["trace"][1]
    assert follow["reused_tokens"] >= model_step["prompt_tokens"]  # the whole first prompt at least
    assert follow["computed_tokens"] == follow["prompt_tokens"] - follow["reused_tokens"]
    assert [r["thread_id"] for r in agent.threads.list()] == [first["thread_id"]]


def test_a_new_process_resumes_the_thread_from_its_saved_model_state(settings, engine):
    thread = build_agent(settings, engine, approve="never").ask("What is the warranty?")["thread_id"]
    fresh_engine = build_engine(settings)  # an empty cache, as in a new process
    answer = build_agent(settings, fresh_engine, approve="never").ask("How long exactly?", thread)
    model_step = [s for s in answer["trace"] if s["node"] == "model"][0]
    assert model_step["reused_tokens"] > 0 and model_step["computed_tokens"] < model_step["prompt_tokens"]


def test_ask_cli_json_carries_answer_sources_trace_and_the_random_weights_flag(settings, capsys, monkeypatch):
    home, model = str(settings.home), str(settings.model)
    result = run_cli(["ask", "How do I reset the router?", "Is it under warranty?", "--home", home, "-m", model,
                      "--collection", "docs", "-n", "4", "--json"], capsys, monkeypatch)
    assert result.code == 0, result.err
    out = json.loads(result.out)
    assert out["random_weights"] is True and len(out["answers"]) == 2
    assert out["answers"][0]["thread_id"] == out["answers"][1]["thread_id"] == out["thread_id"]
    assert [s["node"] for s in out["answers"][1]["trace"]] == ["retrieve", "model", "finalize"]
    listed = json.loads(run_cli(["threads", "list", "--json", "--home", home], capsys, monkeypatch).out)
    assert out["thread_id"] in [row["thread_id"] for row in listed]
    shown = json.loads(run_cli(["threads", "show", out["thread_id"], "--json", "--home", home], capsys, monkeypatch).out)
    assert [m["role"] for m in shown["messages"]].count("user") == 2 and shown["trace"]
    exported = run_cli(["threads", "export", out["thread_id"], "--home", home], capsys, monkeypatch)
    assert json.loads(exported.out)["thread"]["thread_id"] == out["thread_id"]
    assert run_cli(["threads", "rm", out["thread_id"], "--home", home], capsys, monkeypatch).code == 0
    gone = run_cli(["threads", "show", out["thread_id"], "--home", home], capsys, monkeypatch)
    assert gone.code == 1 and "no thread" in gone.err


def test_ask_cli_text_mode_labels_random_weights_and_prints_the_trace(settings, capsys, monkeypatch):
    result = run_cli(["ask", "How do I reset the router?", "--home", str(settings.home), "-m", str(settings.model),
                      "--collection", "docs", "-n", "3", "--trace"], capsys, monkeypatch)
    assert result.code == 0, result.err
    assert "RANDOM WEIGHTS" in result.out and "retrieve" in result.out and "finalize" in result.out


@pytest.mark.parametrize("args, message", [
    (["--thread", "nope"], "no thread 'nope'"),
    (["--collection", "nosuch"], "no collection 'nosuch'"),
    (["--policy", "sometimes"], "sometimes"),
    (["--pack", "nopack"], "no pack named 'nopack'"),
])
def test_ask_cli_bad_input_is_one_clear_error(settings, capsys, monkeypatch, args, message):
    result = run_cli(["ask", "q", "--home", str(settings.home), "-m", str(settings.model), *args], capsys, monkeypatch)
    assert result.code in (1, 2) and message in result.err and "Traceback" not in result.err


def test_policy_auto_answers_a_small_collection_from_a_state_pack_and_says_why(settings, engine):
    agent = build_agent(settings, engine, policy="auto", approve="never", threads=False)
    first = agent.ask("How do I reset the router?")
    mode = first["trace"][0]
    assert mode["node"] == "begin" and mode["mode"] == "long-context pack" and "within 75%" in mode["why"]
    assert [s["node"] for s in first["trace"][1:]] == ["model", "finalize"]  # no search: everything is in the prompt
    prompt = engine.tokenizer.decode(engine.last_prompt_ids)
    assert "recessed button" in prompt and "uplink cable" in prompt and "Mohs hardness" in prompt
    assert (settings.packs_dir / "auto-docs" / "pack.json").is_file()
    assert first["trace"][1]["reused_tokens"] >= agent.meta["pack_tokens"]
    narrow = build_agent(settings.model_copy(update={"long_context_share": 0.001}), engine, policy="auto",
                         approve="never", threads=False)
    mode = narrow.ask("How do I reset the router?")["trace"][0]
    assert mode["mode"] == "retrieval" and "searching" in mode["why"]
