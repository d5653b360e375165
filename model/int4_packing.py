"""ATen's CPU int4 packing, read back: which block of rows this machine's ATen packs in, and the codes.

``torch._convert_weight_to_int4pack_for_cpu`` lays rows out by the instructions ATen runs with:
blocks of 64 output rows with AVX-512, of 32 with AVX2 (per input column, byte j of a block holds
rows j and j + block / 2 as its low and high nibbles; the last N % block rows hold rows 2j and
2j + 1 in byte j). ``cpu_int4_block`` finds this process's block once; ``unpack_int4_cpu`` reads
either layout. ``model.int4`` (checkpoints, repacking, dequantised prefill) and
``model.int4_gemv`` (its one-row kernels take the block) both rely on it. Knows torch only.
"""

from __future__ import annotations

import functools

import torch


def unpack_int4_cpu(packed: torch.Tensor, out_features: int, in_features: int,
                    block: int | None = None) -> torch.Tensor:
    """The values 0..15 [N, K] (uint8) of a weight packed by ``_convert_weight_to_int4pack_for_cpu``
    in blocks of ``block`` output rows (default: this machine's, ``cpu_int4_block``): per input
    column, byte j of a block stores rows j and j + block / 2 as its low and high nibbles; the
    last N % block rows store rows 2j and 2j + 1 in byte j."""
    block = block or cpu_int4_block()
    if block is None:
        raise ValueError("this torch packs int4 weights for the CPU in a layout Feldspar does not read")
    flat, full, half = packed.reshape(-1), out_features // block * block, block // 2
    out = torch.empty(out_features, in_features, dtype=torch.uint8, device=packed.device)
    if full:
        rows = flat[: full * in_features // 2].view(full // block, in_features, half).transpose(1, 2)
        halves = out[:full].view(full // block, 2, half, in_features)
        torch.bitwise_and(rows, 15, out=halves[:, 0])
        torch.bitwise_right_shift(rows, 4, out=halves[:, 1])
    if out_features > full:
        tail = flat[full * in_features // 2:].view(in_features, (out_features - full) // 2)
        out[full:].copy_(torch.stack([tail & 15, tail >> 4], -1).view(in_features, -1).t())
    return out


@functools.cache
def cpu_int4_block() -> int | None:
    """Rows per block of this process's CPU int4 packing: ATen picks it by the instructions it
    runs with (64 with AVX-512, 32 with AVX2), so a packed weight is only portable with its
    block. Checked once, on a shape with full blocks and a tail; None for a layout
    ``unpack_int4_cpu`` does not read (int4 layers then always use ATen's int4 kernel)."""
    q = torch.randint(0, 16, (112, 256), generator=torch.Generator().manual_seed(0), dtype=torch.int32)
    try:
        packed = torch._convert_weight_to_int4pack_for_cpu(q, 1)
    except RuntimeError:
        return None
    return next((block for block in (64, 32) if bool((unpack_int4_cpu(packed, 112, 256, block) == q).all())), None)


def cpu_int4_layout_known() -> bool:
    return cpu_int4_block() is not None
