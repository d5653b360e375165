"""int4 checkpoints hold one packing whatever device made them: the CPU packing, read back
through a device's own kernel (``codes_by_kernel``), so a CUDA-made model saves what a CPU
loads and a CPU-made checkpoint repacks for CUDA. No GPU runs here: these check the CPU half
and the arithmetic the CUDA half relies on (bench/cuda.py's reload check covers a GPU)."""

from __future__ import annotations

import pytest
import torch

from feldspar.model.int4 import CUDA_K_TILE, Int4Linear, _int4_shape, codes_by_kernel, unpack_int4_cpu


@pytest.mark.parametrize("out_features,group", [(64, 128), (176, 64), (48, 32)])  # blocks, both, a tail only
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
