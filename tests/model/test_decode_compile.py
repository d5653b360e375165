"""The decode step's regions under ``torch.compile``: same tokens as eager, exact reuse, clean fallback.

Inductor on the tiny MoE hybrid (Mamba mixer + experts regions, attention layers), the
tiny dense hybrid (whole Mamba-layer regions) and the tiny dense transformer (attention
regions with rotary positions), full precision and quantised, must give the
eager step's greedy tokens, and a state decoded by the compiled step must match the
from-scratch forward of the same ids (state reuse stays exact). A backend that fails to
compile costs one warning and leaves the eager regions in charge, with the same tokens.
``Engine.load`` applies ``EngineOptions.compile`` through ``loader.compile_choice``.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from feldspar.model import decode_step, prefill_scan
from feldspar.model.engine import Engine, EngineOptions
from feldspar.model.errors import CheckpointError
from feldspar.model.generation import Sampling, decode_tokens, new_state, prefill
from feldspar.model.loader import compile_choice, load_checkpoint
from tests.model.logit_reference import assert_reuse_matches_scratch

PROMPT = list(range(7, 47))
STEPS = 12


pytestmark = pytest.mark.usefixtures("eager_after")  # tests/model/conftest.py


@pytest.fixture
def model(tiny_checkpoint):
    return load_checkpoint(str(tiny_checkpoint), "cpu", "float32")[0]


def greedy(model) -> list[int]:
    state = new_state(model)
    logits = prefill(model, state, PROMPT, chunk_size=16)
    return list(decode_tokens(model, state, logits, STEPS, Sampling(), frozenset()))


@pytest.mark.parametrize("fixture, quant", [("tiny_checkpoint", "none"), ("tiny_checkpoint", "int8"),
                                            ("tiny_base_checkpoint", "int4"), ("tiny_dense_checkpoint", "int8")])
def test_inductor_step_gives_the_eager_tokens_and_exact_reuse(request, fixture, quant) -> None:
    model = load_checkpoint(str(request.getfixturevalue(fixture)), "cpu", "float32", quant)[0]
    eager = greedy(model)
    decode_step.set_compiled(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback would warn: fail instead
        assert greedy(model) == eager
        state = new_state(model)
        logits = prefill(model, state, PROMPT, chunk_size=16)
        assert_reuse_matches_scratch(model, PROMPT, state, logits, steps=6, what=f"compiled {quant}")
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


def test_engine_option_turns_compilation_on_and_names_why(tiny_checkpoint) -> None:
    engine = Engine.load(str(tiny_checkpoint), EngineOptions(device="cpu", dtype="float32", compile="on"))
    assert decode_step.compiled() and prefill_scan.compiled()
    assert engine.model.feldspar_choice["compile"] == "on"
    assert engine.model.feldspar_choice["compile_reason"] == "as configured"
    assert engine.model.feldspar_choice["compile_prefill"] == "on"
    engine = Engine.load(str(tiny_checkpoint), EngineOptions(device="cpu", dtype="float32", compile="off"))
    assert not decode_step.compiled() and engine.model.feldspar_choice["compile"] == "off"
    assert not prefill_scan.compiled() and engine.model.feldspar_choice["compile_prefill"] == "off"


def test_auto_compiles_on_cpu_only_with_a_cxx_compiler(monkeypatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    assert compile_choice("auto", cpu) == (False, "auto: no C++ compiler (no-such-compiler-here) for torch.compile")
    monkeypatch.setenv("CXX", "sh")  # any program on PATH stands for one
    assert compile_choice("auto", cpu) == (True, "auto: CPU with a C++ compiler")
    assert compile_choice("auto", cuda)[0] is False
    assert compile_choice("on", cuda) == (True, "as configured")
    with pytest.raises(CheckpointError, match="unknown compile setting 'fast'"):
        compile_choice("fast", cpu)


def test_skipped_guards_keep_two_models_and_strided_states_apart(tiny_checkpoint, tiny_base_checkpoint) -> None:
    """After a model's first compiled step the guards are mostly skipped: a second model of
    another shape and dtype, the first one again, and a state with other strides (as an
    older prefill or pack leaves it) must still each run their own graphs."""
    moe = load_checkpoint(str(tiny_checkpoint), "cpu", "float32")[0]
    hybrid = load_checkpoint(str(tiny_base_checkpoint), "cpu", "bfloat16", "int8")[0]
    eager = {"moe": greedy(moe), "hybrid": greedy(hybrid)}
    decode_step.set_compiled(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a graph run on the wrong inputs fails an assert
        for name, model in [("moe", moe), ("hybrid", hybrid), ("moe", moe), ("hybrid", hybrid)]:
            assert greedy(model) == eager[name], name
        state = new_state(hybrid)
        logits = prefill(hybrid, state, PROMPT, chunk_size=16)
        for layer in state.cache.layers:
            if getattr(layer, "recurrent_states", None):  # same values, transposed strides
                ssm = layer.recurrent_states[0]
                layer.recurrent_states[0] = ssm.transpose(-1, -2).contiguous().transpose(-1, -2)
        strided = list(decode_tokens(hybrid, state, logits, STEPS, Sampling(), frozenset()))
    assert strided == eager["hybrid"]
    assert decode_step.compiled() and len(decode_step._warm) == 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_one_row_float_matmuls_compile_to_inductor_reductions(dtype) -> None:
    """A compiled region's one-token matmul is inductor's own fused multiply-and-sum over the
    weight (no BLAS GEMV call), also for a layer wider than the pass's default CPU limit, and
    computes what the eager region does."""
    from torch._inductor.utils import fresh_cache, run_and_get_code

    torch.manual_seed(0)
    lm_head = torch.nn.Linear(64, 3000, bias=False).to(dtype)
    x = torch.randn(1, 1, 64, dtype=dtype)
    decode_step.set_compiled(True)
    with fresh_cache():
        out, code = run_and_get_code(decode_step._regions["head"], lm_head, x, 2.0)
    generated = "\n".join(code)
    assert "extern_kernels.mm" not in generated and "extern_kernels.addmm" not in generated
    torch.testing.assert_close(out, decode_step.head(lm_head, x, 2.0), rtol=1e-2, atol=1e-2)


def test_inductor_step_of_a_bf16_int4_model_gives_the_eager_tokens(tiny_base_checkpoint) -> None:
    """bf16 int4 decode rows go to Feldspar's int4 kernel (model/int4_gemv.py) where the CPU has
    it, inside the compiled regions too: the same greedy tokens as the eager step."""
    model = load_checkpoint(str(tiny_base_checkpoint), "cpu", "bfloat16", "int4")[0]
    eager = greedy(model)
    decode_step.set_compiled(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert greedy(model) == eager
