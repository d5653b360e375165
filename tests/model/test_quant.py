"""Quantised weights: every Granite kind loads int8/int4, reuse stays exact, saves reload, packs are refused across."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from feldspar.model.checkpoint_random import is_random_checkpoint
from feldspar.model.engine import Engine, EngineOptions, GenerationParams
from feldspar.model.errors import StateError
from feldspar.model.generation import new_state, prefill
from feldspar.model.cpu import cpu_flags
from feldspar.model.loader import load_checkpoint
from feldspar.model.packs import create_pack, load_pack
from feldspar.model.int4 import (
    DEQUANT_ROWS, Int4Linear, cpu_int4_layout_known, dequantize_int4_cpu, int4_group, quantize_int4, unpack_int4_cpu,
)
from feldspar.model import loader as loader_module
from feldspar.model import quant as quant_module
from feldspar.model.loader import quant_choice
from feldspar.model.quant import (
    FLOAT_INT8_ROWS, Int8Linear, QuantExperts, int8_dot_flags, int8_dynamic_mm, quant_name, quantize_int8,
    quantize_rows, save_quantized,
)
from tests.model.logit_reference import assert_logits_close, assert_matches_scratch, logit_difference, logits_from_scratch

IDS = list(range(5, 85))


def quantised_modules(model: nn.Module) -> tuple[int, int, int]:
    """(plain nn.Linear left, quantised linears, quantised expert blocks)."""
    kinds = [type(m) for m in model.modules()]
    plain = sum(isinstance(m, nn.Linear) for m in model.modules())
    return plain, kinds.count(Int8Linear) + kinds.count(Int4Linear), kinds.count(QuantExperts)


@pytest.mark.parametrize("fixture", ["tiny_checkpoint", "tiny_dense_checkpoint", "tiny_base_checkpoint"])
@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_every_granite_kind_loads_quantised_and_stays_close_to_full_precision(request, fixture, mode):
    checkpoint = str(request.getfixturevalue(fixture))
    full, _, _ = load_checkpoint(checkpoint, "cpu", "float32")
    model, _, _ = load_checkpoint(checkpoint, "cpu", "float32", mode)
    plain, quantised, experts = quantised_modules(model)
    assert plain == 0 and quantised > 0 and quant_name(model) == mode
    assert experts == (len(model.model.layers) if fixture == "tiny_checkpoint" else 0)
    if mode == "int4":
        assert any(isinstance(m, Int4Linear) for m in model.modules())
    assert model.feldspar_choice["quant"] == mode
    logits = logits_from_scratch(model, IDS)
    assert logit_difference(logits, logits_from_scratch(full, IDS)) > 0  # it did change the weights
    # the kernels compute exactly what the stored integers mean: full precision with dequantised
    # weights, and (int8 layers) inputs rounded per row to what their int8 codes stand for
    reference = with_dequantised_weights(full, mode)
    reference.config._experts_implementation = "eager"  # the experts' matmuls as F.linear calls
    with RoundedInt8Inputs(mode, skip=router_weights(reference)):
        expected = logits_from_scratch(reference, IDS)
    assert_logits_close(logits, expected, "quantised kernels")


def stored_int8(weight: torch.Tensor, mode: str) -> bool:
    """Whether ``mode`` stores this weight as int8 (int4 layers the kernel cannot take stay int8)."""
    return mode == "int8" or int4_group(weight.shape[1]) is None or weight.shape[0] % 16 != 0


def router_weights(model: nn.Module) -> set[int]:
    """The expert routers' weights (plain parameters, never quantised)."""
    return {id(m.weight) for m in model.modules() if hasattr(m, "top_k") and isinstance(m.weight, nn.Parameter)}


class RoundedInt8Inputs(TorchFunctionMode):
    """Every ``F.linear`` whose weight ``mode`` stores as int8 (but those in ``skip``) gets its input
    rounded per row to int8 codes times the row's scale: what ``torch._int_mm`` multiplies."""

    def __init__(self, mode: str, skip: set[int]) -> None:
        super().__init__()
        self.mode, self.skip = mode, skip

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.linear and id(args[1]) not in self.skip and stored_int8(args[1], self.mode):
            x = args[0]
            codes, scales = quantize_rows(x.reshape(-1, x.shape[-1]))
            args = ((codes.float() * scales).reshape(x.shape).to(x.dtype), *args[1:])
        return func(*args, **(kwargs or {}))


def dequantised(weight: torch.Tensor, mode: str) -> torch.Tensor:
    """What the int8/int4 codes of ``weight`` stand for (int4 layers the kernel cannot take stay int8)."""
    group = int4_group(weight.shape[1])
    if stored_int8(weight, mode):
        q, scales = quantize_int8(weight)
        return q.float() * scales[:, None]
    q, scales_zeros = quantize_int4(weight, group)
    scales, zeros = (scales_zeros[..., i].t().repeat_interleave(group, dim=1) for i in (0, 1))
    return (q.float() - 8) * scales + zeros


@torch.no_grad()
def with_dequantised_weights(model: nn.Module, mode: str) -> nn.Module:
    model.lm_head.weight = nn.Parameter(model.lm_head.weight.clone())  # untie: embeddings stay full precision
    for module in model.modules():
        if isinstance(module, nn.Linear):
            module.weight.copy_(dequantised(module.weight, mode))
        elif hasattr(module, "gate_up_proj") and hasattr(module, "down_proj"):
            for fused in (module.gate_up_proj, module.down_proj):
                fused.copy_(torch.stack([dequantised(w, mode) for w in fused]))
    return model


@pytest.fixture(scope="module", params=["int8", "int4"])
def quant_engine(request, tiny_checkpoint):
    options = EngineOptions(device="cpu", dtype="float32", quant=request.param, prefill_chunk=16)
    return Engine.load(str(tiny_checkpoint), options)


def test_chunked_prefill_and_decode_on_a_quantised_model_match_its_own_from_scratch_logits(quant_engine):
    model = quant_engine.model
    state = new_state(model)
    logits = prefill(model, state, IDS, chunk_size=16, stops=(23, 41))
    assert_matches_scratch(model, IDS, logits, "chunked quantised prefill")
    result = quant_engine.generate(IDS, GenerationParams(max_new_tokens=6, reuse=True))
    again = quant_engine.generate(IDS, GenerationParams(max_new_tokens=6, reuse=True))
    assert again.reused_tokens > 0 and again.token_ids == result.token_ids


def test_a_quantised_checkpoint_saves_and_reloads_to_the_same_logits(quant_engine, tmp_path):
    saved = save_quantized(quant_engine.model, quant_engine.tokenizer, tmp_path / "q")
    model, _, _ = load_checkpoint(str(saved), "cpu")
    assert quant_name(model) == quant_name(quant_engine.model) and quantised_modules(model)[0] == 0
    assert model.feldspar_choice["quant_reason"] == "saved quantised checkpoint"
    assert is_random_checkpoint(saved)  # random weights stay labelled
    assert_logits_close(logits_from_scratch(model, IDS), logits_from_scratch(quant_engine.model, IDS),
                        "reloaded quantised model", tolerance=1e-6)


def test_a_pack_made_with_one_quantisation_is_refused_by_another(quant_engine, tiny_checkpoint, tmp_path):
    documents = [{"doc_id": "a", "title": "a.txt", "text": "Quartz is hard. Feldspar is common."}]
    create_pack(quant_engine, tmp_path / "packs", "p", documents, [])
    load_pack(quant_engine, tmp_path / "packs", "p")  # the same quantisation loads
    other = "int4" if quant_name(quant_engine.model) == "int8" else "none"
    engine = Engine.load(str(tiny_checkpoint), EngineOptions(device="cpu", dtype="float32", quant=other))
    with pytest.raises(StateError, match=f"made with {quant_name(quant_engine.model)} weights"):
        load_pack(engine, tmp_path / "packs", "p")


def test_a_pack_made_with_other_quantised_values_of_the_same_mode_is_refused(quant_engine, tmp_path):
    documents = [{"doc_id": "a", "title": "a.txt", "text": "Quartz is hard. Feldspar is common."}]
    create_pack(quant_engine, tmp_path / "packs", "p", documents, [])
    scales = [b for name, b in quant_engine.model.named_buffers() if name.endswith(("scales", "scales_zeros"))]
    saved = [b.clone() for b in scales]
    try:
        with torch.no_grad():
            for buffer in scales:
                buffer.mul_(1.5)  # what another int4 grid (an older Feldspar's) would have stored
        with pytest.raises(StateError, match="other weights"):
            load_pack(quant_engine, tmp_path / "packs", "p")
    finally:
        with torch.no_grad():
            for buffer, before in zip(scales, saved):
                buffer.copy_(before)


def test_auto_dtype_and_quant_name_their_reason(tiny_checkpoint):
    model, _, _ = load_checkpoint(str(tiny_checkpoint), "cpu", "auto", "auto")
    choice = model.feldspar_choice
    native = bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})
    fast = int8_dot_flags() or "avx2" in cpu_flags()
    assert choice["quant"] == ("int8" if fast else "none")
    assert choice["quant_reason"].startswith("auto: int8 matmuls with" if fast else "auto: the CPU has no int8 dot")
    assert choice["dtype"] == ("bfloat16" if native else "float32") and choice["dtype_reason"].startswith("auto: ")


def test_int8_rows_are_computed_on_their_own_and_close_to_float():
    torch.manual_seed(3)
    x, weight = torch.randn(37, 96), torch.randn(24, 96)
    q, scales = quantize_int8(weight)
    out = int8_dynamic_mm(x, q, scales)
    for i in (0, 17, 36):  # a row's result is the same alone or among others: chunking cannot change it
        assert torch.equal(int8_dynamic_mm(x[i:i + 1], q, scales)[0], out[i])
    exact = x @ (q.float() * scales[:, None]).t()
    assert (out - exact).abs().max() <= 0.02 * exact.abs().max()
    codes, row_scales = quantize_rows(x)
    assert codes.dtype == torch.int8 and codes.abs().max() == 127 and row_scales.shape == (37, 1)


@pytest.mark.parametrize("flags", [{"sse4_2"}, {"avx2"}, {"avx2", "avx_vnni"}])
def test_without_int8_dot_products_rows_multiply_the_same_integers_and_auto_needs_avx2(monkeypatch, flags):
    # the other kinds of CPU cannot run here: their flags can
    monkeypatch.setattr(quant_module, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(loader_module, "cpu_flags", lambda: frozenset(flags))
    assert quant_choice("auto", torch.device("cpu"))[0] == ("none" if flags == {"sse4_2"} else "int8")
    torch.manual_seed(5)
    x, weight = torch.randn(FLOAT_INT8_ROWS + 30, 768), torch.randn(40, 768)
    q, scales = quantize_int8(weight)
    codes, row_scales = quantize_rows(x)
    exact = torch._int_mm(codes, q.t()) * (row_scales * scales)  # ATen's int8 x int8 -> int32
    assert torch.equal(int8_dynamic_mm(x, q, scales), exact)
    assert torch.equal(int8_dynamic_mm(x[:1], q, scales), exact[:1])


@pytest.mark.parametrize("out_features", [64, 48, 176])  # whole 64-row blocks, a tail only, both
def test_the_cpu_int4_packing_unpacks_to_the_values_packed(out_features):
    q = torch.randint(0, 16, (out_features, 256), dtype=torch.int32, generator=torch.Generator().manual_seed(1))
    packed = torch._convert_weight_to_int4pack_for_cpu(q, 1)
    assert cpu_int4_layout_known()
    assert torch.equal(unpack_int4_cpu(packed, out_features, 256).to(torch.int32), q)


def test_a_long_int4_forward_dequantises_to_what_the_int4_kernel_computes():
    torch.manual_seed(4)
    layer = Int4Linear.from_weight(torch.randn(176, 256), 128)
    x = torch.randn(DEQUANT_ROWS + 3, 256)
    long = layer(x)  # enough rows: one fp32 matmul of the dequantised weight
    short = torch.cat([layer(x[i:i + 8]) for i in range(0, len(x), 8)])  # few rows: the int4 kernel
    assert (long - short).abs().max() <= 1e-4 * short.abs().max()
    weight = dequantize_int4_cpu(layer.weight, layer.scales_zeros, 128, 176, 256)
    assert torch.allclose(long, x @ weight.t(), atol=1e-4)


def test_an_int4_prefill_long_enough_to_dequantise_matches_a_chunked_one(tiny_checkpoint):
    model = load_checkpoint(str(tiny_checkpoint), "cpu", "float32", "int4")[0]
    ids = [5 + i % 300 for i in range(DEQUANT_ROWS + 24)]
    chunked = prefill(model, new_state(model), ids, chunk_size=16)  # every forward under DEQUANT_ROWS
    assert_matches_scratch(model, ids, chunked, "chunked int4 prefill vs one dequantising forward")
