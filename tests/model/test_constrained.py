"""Grammar-constrained decoding on the random tiny checkpoint: every output has the structure.

Random weights are the point: whatever the model prefers, the mask leaves only what the
grammar allows, so validity cannot come from the model.
"""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feldspar.model.engine import Engine, EngineOptions, GenerationParams
from feldspar.model.structure import Structure, StructureError
from feldspar.model.toolcalls import parse_assistant


@pytest.fixture(scope="module")
def engine(tiny_checkpoint):
    return Engine.load(str(tiny_checkpoint), EngineOptions(device="cpu", dtype="float32", prefill_chunk=64))


NAMES = st.sampled_from(["id", "name", "city", "tags", "score", "kind", "note", "ok"])
LEAVES = st.one_of(
    st.just({"type": "string"}),
    st.builds(lambda n: {"type": "string", "maxLength": n}, st.integers(1, 6)),
    st.just({"type": "integer"}),
    st.builds(lambda lo: {"type": "integer", "minimum": lo, "maximum": lo + 50}, st.integers(-20, 20)),
    st.just({"type": "number"}),
    st.just({"type": "boolean"}),
    st.just({"type": "null"}),
    st.builds(lambda xs: {"enum": xs}, st.lists(st.sampled_from(["a", "b c", "Δ", 1, True]), min_size=1, max_size=3, unique=True)),
    st.just({"type": "string", "format": "date"}),
)


def _object(children):
    return st.dictionaries(NAMES, children, min_size=1, max_size=4).flatmap(
        lambda props: st.builds(lambda req: {"type": "object", "properties": props, "required": sorted(req),
                                             "additionalProperties": False},
                                st.sets(st.sampled_from(sorted(props)))))


SCHEMAS = st.recursive(LEAVES, lambda kids: st.one_of(
    _object(kids), st.builds(lambda item, n: {"type": "array", "items": item, "minItems": n, "maxItems": n + 2},
                             kids, st.integers(0, 2))), max_leaves=6).map(
    lambda s: s if s.get("type") == "object" else {"type": "object", "properties": {"value": s}, "required": ["value"]})


@settings(max_examples=12, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                                    HealthCheck.too_slow])
@given(schema=SCHEMAS, seed=st.integers(0, 1000))
def test_every_sampled_output_validates(engine, schema, seed):
    structure = Structure.json_schema(schema)
    result = engine.generate("Write JSON.", GenerationParams(max_new_tokens=160, temperature=1.0, seed=seed,
                                                             structure=structure))
    assert result.finish_reason == "stop", result.text
    assert structure.validate(result.text) == [], (schema, result.text)


def test_greedy_streaming_and_reuse_give_the_same_valid_text(tiny_checkpoint):
    engine = Engine.load(str(tiny_checkpoint), EngineOptions(device="cpu", dtype="float32", reuse=True))
    structure = Structure.json_schema({"type": "object", "properties": {"n": {"type": "integer"}, "s": {"type": "string"}},
                                       "required": ["n", "s"]})
    params = GenerationParams(max_new_tokens=60, structure=structure)
    first = engine.stream("Same prompt, twice", params)
    streamed = "".join(first)
    second = engine.generate("Same prompt, twice", params)
    assert second.reused_tokens > 0
    assert streamed == first.finish().text == second.text
    assert structure.validate(second.text) == []


def test_regex_and_choice(engine):
    regex = Structure.regex(r"[0-9]{3}-[a-z]{2}")
    text = engine.generate("Code:", GenerationParams(max_new_tokens=20, temperature=1.0, seed=4, structure=regex)).text
    assert re.fullmatch(r"[0-9]{3}-[a-z]{2}", text)
    choice = Structure.choice(["red", "green", "blue"])
    for seed in range(3):
        text = engine.generate("Colour:", GenerationParams(max_new_tokens=10, temperature=1.0, seed=seed, structure=choice)).text
        assert text in ("red", "green", "blue")


def test_stop_string_ends_constrained_text_early(engine):
    structure = Structure.choice(["alpha beta"])
    result = engine.generate("x", GenerationParams(max_new_tokens=10, structure=structure, stop=(" beta",)))
    assert (result.text, result.finish_reason) == ("alpha", "stop")


def test_unsatisfiable_within_max_tokens_says_length_and_adds_nothing(engine):
    structure = Structure.json_schema({"type": "object", "properties": {"a": {"type": "string", "minLength": 40}},
                                       "required": ["a"]})
    result = engine.generate("x", GenerationParams(max_new_tokens=6, structure=structure))
    assert result.finish_reason == "length"
    assert result.completion_tokens == 6 and result.text.startswith('{"a":"')
    with pytest.raises(ValueError):
        json.loads(result.text)


@pytest.mark.parametrize("schema, where", [
    ({"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "strin"}}}}},
     "/properties/a/properties/b"),
    ({"type": "object", "properties": {"p": {"type": "string", "pattern": "(?<=x)y"}}}, "/properties/p"),
    ({"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 5, "maxLength": 2}}, "/items"),
])
def test_uncompilable_schema_names_the_part(engine, schema, where):
    with pytest.raises(StructureError) as caught:
        engine.stream("x", GenerationParams(structure=Structure.json_schema(schema)))
    assert caught.value.where == where and caught.value.reason


def test_special_tokens_never_appear_inside_json(engine):
    structure = Structure.json_schema({"type": "object", "properties": {"s": {"type": "string"}}, "required": ["s"]})
    for seed in range(3):
        result = engine.generate("x", GenerationParams(max_new_tokens=40, temperature=1.0, seed=seed, structure=structure))
        special = set(engine.tokenizer.all_special_ids) - engine.stop_ids
        assert not special & set(result.token_ids)
        assert "<|" not in result.text


TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "maxLength": 12}, "days": {"type": "integer"}},
        "required": ["city", "days"]}}},
    {"type": "function", "function": {"name": "add", "parameters": {
        "type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}}},
]


@pytest.mark.parametrize("names, parallel", [(["add"], False), (["get_weather"], True), (None, False)])
def test_forced_tool_calls_parse_into_the_named_tool(engine, names, parallel):
    from feldspar.model.constrained import tool_structure

    structure = tool_structure(engine.tokenizer, TOOLS, names, parallel)
    for seed in range(2):
        result = engine.generate("call", GenerationParams(max_new_tokens=90, temperature=1.0, seed=seed, structure=structure))
        turn = parse_assistant(result.text, TOOLS)
        assert turn.calls and not turn.errors, result.text
        assert all(c.name in (names or ["add", "get_weather"]) for c in turn.calls)
        assert parallel or len(turn.calls) == 1


def test_tool_choice_naming_an_undeclared_tool_is_an_error(engine):
    from feldspar.model.constrained import tool_structure

    with pytest.raises(StructureError, match="nope"):
        tool_structure(engine.tokenizer, TOOLS, ["nope"], True)


PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                                           "tags": {"type": "array", "items": {"enum": ["a", "b"]}}},
          "required": ["name", "age", "tags"]}


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_overlapped_mask_gives_the_same_tokens_as_in_line(engine, monkeypatch, temperature):
    """The next mask computed on a worker during the forward picks exactly what the in-line mask picks."""
    import threading

    runs = {}
    for overlap in ("1", "0"):
        monkeypatch.setenv("FELDSPAR_GRAMMAR_OVERLAP", overlap)
        params = GenerationParams(max_new_tokens=48, temperature=temperature, seed=11, reuse=False,
                                  structure=Structure.json_schema(PERSON))
        runs[overlap] = engine.generate("Reply with JSON.", params)
        if overlap == "1":
            assert any(t.name.startswith("feldspar-grammar") for t in threading.enumerate())
    assert runs["1"].token_ids == runs["0"].token_ids and len(runs["0"].token_ids) > 5
    assert runs["1"].text == runs["0"].text


@pytest.mark.parametrize("budget", [200, 12])  # 12: every step is in the closing reserve
def test_greedy_pick_without_a_mask_is_the_masked_argmax(engine, budget):
    import torch

    from feldspar.model.constrained import constraint_for
    from feldspar.model.generation import Sampling

    vocab = engine.model.config.vocab_size
    fast, masked = (constraint_for(engine.tokenizer, Structure.json_schema(PERSON), vocab, budget) for _ in "ab")
    generator, unmasked_picks = torch.Generator().manual_seed(3), 0
    for _ in range(min(budget, 40)):
        logits = torch.randn(vocab, generator=generator)
        token = fast.pick(logits, Sampling())
        assert token == int(torch.argmax(masked.mask(logits)))
        unmasked_picks += token == int(torch.argmax(logits))
        if masked.complete:
            break
        fast.advance(token)
        masked.advance(token)
    assert unmasked_picks < 40  # the grammar did narrow some picks (the test compares something)
