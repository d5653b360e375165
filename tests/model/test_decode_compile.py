"""The decode step's kernels under ``torch.compile``: same greedy tokens as eager, clean fallback.

Inductor on the tiny MoE checkpoint must give the eager step's greedy tokens; a backend
that fails to compile must cost one warning and leave the eager kernels in charge, with
the same tokens. ``Engine.load`` applies ``EngineOptions.compile``.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from feldspar.model import decode_step
from feldspar.model.engine import Engine, EngineOptions
from feldspar.model.generation import Sampling, decode_tokens, new_state, prefill
from feldspar.model.loader import load_checkpoint

PROMPT = list(range(7, 47))
STEPS = 12


@pytest.fixture
def model(tiny_checkpoint):
    torch._dynamo.reset()
    yield load_checkpoint(str(tiny_checkpoint), "cpu", "float32")[0]
    decode_step.set_compiled(False)
    torch._dynamo.reset()


def greedy(model) -> list[int]:
    state = new_state(model)
    logits = prefill(model, state, PROMPT, chunk_size=16)
    return list(decode_tokens(model, state, logits, STEPS, Sampling(), frozenset()))


def test_inductor_step_gives_the_eager_tokens(model) -> None:
    eager = greedy(model)
    decode_step.set_compiled(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback would warn: fail instead
        assert greedy(model) == eager
    assert decode_step.compiled()


def refuse(graph, example_inputs):
    raise RuntimeError("this backend compiles nothing")


def test_a_failed_compile_warns_once_and_decodes_eagerly(model) -> None:
    eager = greedy(model)
    decode_step.set_compiled(True, backend=refuse)
    assert decode_step.compiled()
    with pytest.warns(RuntimeWarning, match="torch.compile of the decode step failed") as caught:
        assert greedy(model) == eager
    assert len([w for w in caught if "decode step" in str(w.message)]) == 1
    assert not decode_step.compiled()


def test_engine_option_turns_compilation_on(tiny_checkpoint) -> None:
    try:
        Engine.load(str(tiny_checkpoint), EngineOptions(device="cpu", dtype="float32", compile=True))
        assert decode_step.compiled()
        Engine.load(str(tiny_checkpoint), EngineOptions(device="cpu", dtype="float32"))
        assert not decode_step.compiled()
    finally:
        decode_step.set_compiled(False)
