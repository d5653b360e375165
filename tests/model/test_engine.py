"""The engine on tiny random-weight Granite checkpoints, loaded by the production loader."""

from __future__ import annotations

import pytest
import torch

from feldspar.model.engine import Engine, EngineOptions, GenerationParams
from feldspar.model.errors import ContextOverflowError, PromptError
from feldspar.model.generation import chunk_ends, greedy, new_state, prefill
from feldspar.model.prompts import FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX, fim_prompt

from tests.model.logit_reference import assert_logits_close, logits_from_scratch

GREEDY = GenerationParams(max_new_tokens=12, reuse=False)
HELLO = [{"role": "user", "content": "Hello, Granite! Grüße 🌍"}]


@pytest.fixture(scope="module")
def engine(tiny_checkpoint) -> Engine:
    return Engine.load(str(tiny_checkpoint), EngineOptions(device="cpu", dtype="float32", prefill_chunk=8, reuse=False))


@pytest.fixture(scope="module")
def base_engine(tiny_base_checkpoint) -> Engine:
    return Engine.load(str(tiny_base_checkpoint), EngineOptions(device="cpu", dtype="float32", reuse=False))


def test_loaded_model_is_the_granite_hybrid_class(engine):
    assert type(engine.model).__name__ == "GraniteMoeHybridForCausalLM"
    kinds = {getattr(layer, "block_type", None) for layer in engine.model.model.layers}
    assert {"linear_attention", "full_attention"} <= kinds


def test_streaming_equals_non_streaming(engine):
    stream = engine.chat(HELLO, params=GREEDY)
    streamed = "".join(stream)
    whole = engine.chat(HELLO, params=GREEDY).finish()
    assert streamed == stream.result.text == whole.text
    assert stream.result.token_ids == whole.token_ids


def test_greedy_is_deterministic(engine):
    runs = {tuple(engine.chat(HELLO, params=GREEDY).finish().token_ids) for _ in range(3)}
    assert len(runs) == 1


def test_seeded_sampling_repeats_and_seeds_differ(engine):
    def run(seed):
        params = GenerationParams(max_new_tokens=16, temperature=1.5, top_p=0.95, seed=seed, reuse=False)
        return engine.chat(HELLO, params=params).finish().token_ids

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_result_carries_counts_finish_reason_and_timings(engine):
    result = engine.chat(HELLO, params=GREEDY).finish()
    assert result.prompt_tokens == len(engine.encode(engine.render(HELLO)))
    assert result.completion_tokens == 12 and result.finish_reason == "length"
    assert result.computed_tokens + result.reused_tokens == result.prompt_tokens
    assert result.ttft_s > 0 and result.prefill_s > 0 and result.prefill_tokens_per_s > 0


def test_generation_stops_on_end_of_text(engine):
    first = engine.chat(HELLO, params=GREEDY).finish().token_ids[0]
    stopping = Engine(engine.model, engine.tokenizer, engine.resolved, engine.options)
    stopping.stop_ids = frozenset({first})
    result = stopping.chat(HELLO, params=GREEDY).finish()
    assert result.finish_reason == "stop" and result.text == "" and result.completion_tokens == 1


def test_chunked_prefill_equals_one_shot(engine):
    ids = engine.encode(engine.render(HELLO * 3))
    expected = logits_from_scratch(engine.model, ids)
    for chunk in (len(ids), 16, 5, 1):
        state = new_state(engine.model)
        logits = prefill(engine.model, state, ids, chunk_size=chunk)
        assert state.length == len(ids)
        assert_logits_close(logits, expected, f"prefill in chunks of {chunk}")


@pytest.mark.parametrize("values", [
    [1.0, 3.0, 3.0, 2.0],  # ties: the first
    [1.0, float("nan"), 5.0, float("nan")],  # a NaN counts as the largest
    [float("-inf"), float("-inf")],
    [-2.0, -1.0, -3.0],
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_greedy_picks_what_torch_argmax_picks(values, dtype):
    logits = torch.tensor(values, dtype=dtype)
    assert greedy(logits) == int(torch.argmax(logits))
    strided = torch.stack([logits, torch.zeros_like(logits)], dim=1)[:, 0]  # a view with a stride of 2
    assert greedy(strided) == int(torch.argmax(strided))


def test_greedy_over_a_vocabulary_matches_torch_argmax():
    logits = torch.randn(100352, generator=torch.Generator().manual_seed(3))
    logits[77_777] = logits.max() + 1
    assert greedy(logits) == int(torch.argmax(logits)) == 77_777


def test_chunk_plan_covers_the_prompt_and_stops_at_requested_positions():
    assert chunk_ends(0, 10, 4) == [4, 8, 10]
    assert chunk_ends(3, 10, 4, stops=[5, 50]) == [5, 7, 10]
    assert chunk_ends(5, 5, 4) == []


def test_prompt_over_the_context_window_is_refused_before_compute(engine):
    with pytest.raises(ContextOverflowError, match="context window"):
        engine.chat(HELLO, params=GenerationParams(max_new_tokens=engine.context_window))


def test_render_passes_tools_and_documents_natively(engine):
    tools = [{"type": "function", "function": {"name": "lookup", "description": "d", "parameters": {}}}]
    docs = [{"doc_id": 1, "title": "T", "text": "body"}]
    text = engine.render(HELLO, tools=tools, documents=docs)
    assert "<tools>" in text and "<documents>" in text and '"name": "lookup"' in text
    assert text.endswith("<|start_of_role|>assistant<|end_of_role|>")


def test_fim_prompt_construction_and_tokens(base_engine):
    text = fim_prompt("def add(a, b):\n    ", "\n    return c\n")
    assert text == f"{FIM_PREFIX}def add(a, b):\n    {FIM_SUFFIX}\n    return c\n{FIM_MIDDLE}"
    ids = base_engine.encode(text)
    special = [base_engine.tokenizer.convert_tokens_to_ids(t) for t in (FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE)]
    assert [i for i in ids if i in special] == special
    result = base_engine.fill_in_middle("x = ", "\nprint(x)", GenerationParams(max_new_tokens=4)).finish()
    assert result.prompt_tokens == len(base_engine.encode(fim_prompt("x = ", "\nprint(x)")))


def test_fim_code_that_names_control_tokens_adds_none(base_engine):
    """Completing code that mentions the FIM tokens (like model/prompts.py) puts one of each in the prompt."""
    code = 'FIM = "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"\nEND = "<|end_of_text|>"\n'
    base_engine.fill_in_middle(code, code, GenerationParams(max_new_tokens=1)).finish()
    added = set(base_engine.tokenizer.get_added_vocab().values())
    special = [base_engine.tokenizer.convert_tokens_to_ids(t) for t in (FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE)]
    assert [i for i in base_engine.last_prompt_ids if i in added] == special


def test_base_model_refuses_chat_with_a_clear_message(base_engine):
    assert not base_engine.is_chat
    with pytest.raises(PromptError, match="no chat template"):
        base_engine.chat(HELLO)


def test_plain_completion_works_on_base_models(base_engine):
    result = base_engine.complete("Once upon a time", GenerationParams(max_new_tokens=5)).finish()
    assert result.completion_tokens == 5


def test_empty_prompt_is_refused(engine):
    with pytest.raises(PromptError):
        engine.complete("")


def test_boundaries_fall_after_each_message(engine):
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    ids = engine.encode(engine.render(messages))
    cuts = engine.boundaries(ids)
    assert len(cuts) == 2
    first = engine.tokenizer.decode(ids[: cuts[0]])
    assert first.endswith("<|end_of_text|>\n") and first.count("<|start_of_role|>") == 1
