"""int4 checkpoints hold one packing whatever device made them: the CPU packing, read back
through a device's own kernel (``codes_by_kernel``), so a CUDA-made model saves what a CPU
loads and a CPU-made checkpoint repacks for CUDA. ATen's CPU packing itself depends on the CPU
(blocks of 64 rows with AVX-512, 32 with AVX2): quant.json names the block and a checkpoint
from the other kind of CPU is repacked on load. No GPU runs here: these check the CPU half and
the arithmetic the CUDA half relies on (bench/cuda.py's reload check covers a GPU)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from feldspar.model.engine import Engine, EngineOptions
from feldspar.model.int4 import (
    CUDA_K_TILE, Int4Linear, _int4_shape, codes_by_kernel, cpu_int4_block, unpack_int4_cpu,
)
from feldspar.model.loader import load_checkpoint
from feldspar.model.quant import QUANT_FILE, WEIGHTS_FILE, save_quantized

from tests.model.logit_reference import assert_logits_close, logits_from_scratch

SHAPES = [(64, 128), (176, 64), (48, 32)]  # blocks, both, a tail only (out_features, group)


def pack_in_blocks(codes: torch.Tensor, block: int) -> torch.Tensor:
    """The CPU packing of a machine whose ATen packs ``block`` rows at a time (written from its
    description, checked against this machine's ATen below)."""
    n, k = codes.shape
    full, half = n // block * block, block // 2
    blocks = codes[:full].view(full // block, 2, half, k)
    tail = codes[full:]
    parts = [(blocks[:, 0] | blocks[:, 1] << 4).transpose(1, 2).reshape(-1), (tail[0::2] | tail[1::2] << 4).t().reshape(-1)]
    return torch.cat(parts).to(torch.uint8).view(n, k // 2)


def other_block() -> int:
    return {64: 32, 32: 64}[cpu_int4_block()]


@pytest.mark.parametrize("out_features,group", SHAPES)
def test_the_kernel_reads_back_the_codes_of_a_packed_weight(out_features, group):
    layer = Int4Linear.from_weight(torch.randn(out_features, 256, generator=torch.Generator().manual_seed(3)), group)
    codes = codes_by_kernel(layer.weight, group, out_features, 256)
    assert codes.dtype == torch.int32 and codes.shape == (out_features, 256)
    assert torch.equal(codes, unpack_int4_cpu(layer.weight, out_features, 256).to(torch.int32))


def test_a_cpu_layer_is_already_portable_and_stays_as_loaded():
    layer = Int4Linear.from_weight(torch.randn(64, 256), 128)
    before = layer.weight.clone()
    assert layer.portable_weight() is layer.weight
    layer.to_device_layout()
    assert torch.equal(layer.weight, before)


def test_cuda_tiles_are_the_shape_torch_packs_and_other_widths_stay_portable():
    # torch's CUDA packing: [N / 8, K / (inner k tiles * 16), 32, inner k tiles / 2] int32, tiles = 8
    assert _int4_shape(176, 768, "cuda") == (22, 6, 32, 4) and CUDA_K_TILE == 128
    assert _int4_shape(176, 64, "cuda") == (176, 32) == _int4_shape(176, 64, "cpu")
    assert _int4_shape(176, 768, "meta") == (176, 384)


@pytest.mark.parametrize("out_features,group", SHAPES)
def test_this_machines_packing_is_the_one_its_block_describes(out_features, group):
    layer = Int4Linear.from_weight(torch.randn(out_features, 256, generator=torch.Generator().manual_seed(4)), group)
    codes = codes_by_kernel(layer.weight, group, out_features, 256)
    assert torch.equal(pack_in_blocks(codes, cpu_int4_block()), layer.weight)
    other = pack_in_blocks(codes, other_block())
    assert torch.equal(unpack_int4_cpu(other, out_features, 256, other_block()).to(torch.int32), codes)


def test_a_checkpoint_packed_on_the_other_kind_of_cpu_loads_to_the_same_logits(tiny_checkpoint, tmp_path):
    engine = Engine.load(str(tiny_checkpoint), EngineOptions(device="cpu", dtype="float32", quant="int4"))
    saved = save_quantized(engine.model, engine.tokenizer, tmp_path / "q")
    spec = json.loads((saved / QUANT_FILE).read_text())
    assert spec["int4_cpu_block"] == cpu_int4_block()
    tensors = load_file(saved / WEIGHTS_FILE)
    layers = {f"{name}.weight": m for name, m in engine.model.named_modules() if isinstance(m, Int4Linear)}
    for key, layer in layers.items():  # as the other kind of CPU would have written them
        codes = unpack_int4_cpu(tensors[key], layer.out_features, layer.in_features)
        tensors[key] = pack_in_blocks(codes, other_block())
    save_file(tensors, saved / WEIGHTS_FILE)
    (saved / QUANT_FILE).write_text(json.dumps({**spec, "int4_cpu_block": other_block()}))
    model, _, _ = load_checkpoint(str(saved), "cpu")
    ids = list(range(5, 45))
    assert_logits_close(logits_from_scratch(model, ids), logits_from_scratch(engine.model, ids),
                        "int4 checkpoint from the other kind of CPU", tolerance=1e-6)
