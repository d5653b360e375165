"""Quantisation of a Granite model's linear layers: int8 per channel, int4 group-wise (weight-only).

``quantize(model, "int8" | "int4")`` replaces, in place, every ``nn.Linear`` (attention
projections, Mamba in/out projections, shared MLP, lm_head) and the routed experts'
fused 3-D weights (``GraniteMoeHybridExperts``) by modules holding integer weights and
per-channel (int8) or per-group (int4) scales; an int4 layer whose shape the kernel cannot
take (in-features not a multiple of 32, out-features of 16) is stored int8. The matmuls are
ATen's maintained kernels: ``torch._int_mm`` for int8 and, as gpt-fast uses it,
``torch._weight_int4pack_mm_for_cpu`` for int4 (CUDA: ``torch._weight_int4pack_mm`` on the
tensor-core layout; int8 dequantises into the matmul). On CPU an int8 layer quantises its input too, each row
to symmetric int8 with its own scale, and ``torch._int_mm`` (oneDNN; VNNI where the CPU has
it) multiplies int8 by int8 into exact int32, scaled back by row and channel: the scheme of
llama.cpp's Q8_0 dot products, three times the weight-only kernel's speed at batch 1 here and
faster than a bf16 matmul in prefill; a one-row product (decode) goes to ``model.int8_gemv``'s
kernel where it is ready, which gives ``_int_mm``'s integers at the memory's speed. Every row
is computed on its own and the integer sums are exact, so a token's result does not depend
on how many rows share its forward: chunked prefill, decode and a from-scratch forward agree, which state reuse relies on (its error
against fp32 is in ``feldspar bench engine``'s quality rows). Without int8 dot products
(``int8_dot_flags``) ``_int_mm`` is slow, so there several rows multiply the same codes as fp32. On CUDA an int8 weight is
dequantised into the matmul. The int4 kernel is fast with bf16 activations and slow with fp32
ones, so ``loader`` runs quantised models in bf16 where the CPU has it; the int4 layers, their
bf16-exact grid and their dequantised prefill are ``model.int4``'s.

``save_quantized``/``load_quantized`` write and read a quantised checkpoint directory
(config, tokenizer, ``quantized.safetensors`` and ``quant.json``) so the conversion is paid
once; ``load_quantized`` also reads the sharded form ``model.layerwise`` writes, one shard at a
time onto a meta-device skeleton, so no full-precision weight is ever made. Knows torch and the transformers Granite module classes; nothing of prompts or states.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from feldspar.model import int4_gemv, int8_gemv
from feldspar.model.int8_gemv import quantize_rows
from feldspar.model.cpu import cpu_flags
from feldspar.model.int4 import Int4Linear, cpu_int4_block, int4_group

QUANTS = ("none", "int8", "int4")
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
FLOAT_INT8_ROWS = 2  # from this many rows a CPU without int8 dot products multiplies int8 codes as fp32
QUANT_FILE, WEIGHTS_FILE = "quant.json", "quantized.safetensors"
INDEX_FILE = "quantized.safetensors.index.json"  # sharded: see model/layerwise.py


# ---- int8 ----------------------------------------------------------------------------
def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: (int8 [N, K], fp32 scales [N])."""
    w = weight.detach().float()
    scales = (w.abs().amax(dim=1) / 127).clamp(min=1e-8)
    q = torch.round(w / scales[:, None]).clamp(-128, 127).to(torch.int8)
    return q, scales


def int8_dot_flags() -> list[str]:
    """The CPU's int8 dot-product instructions, without which ATen's int8 matmuls are slow: on an
    AVX2-only AMD EPYC ``torch._int_mm`` ran 5-6 GOP/s, against 164 GFLOP/s for the fp32 matmul
    of the same integers (docs/models.md)."""
    return [flag for flag in INT8_DOT_FLAGS if flag in cpu_flags()]


def int8_dynamic_mm(x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """``x @ (weight * scales)^T`` with ``x`` [M, K] quantised per row: int8 x int8 -> int32, scaled
    back by row and channel, in x's dtype. Without int8 dot products (``int8_dot_flags``) several
    rows multiply the same integers as fp32 (exact while a sum stays under 2^24, within fp32's
    rounding beyond: the same result to ~1e-7)."""
    if int8_gemv.READY and x.shape[0] == 1 and x.dtype == torch.float32 and scales.dtype == torch.float32:
        return int8_gemv.gemv_f32(x, weight, scales)  # all of this in one call
    xq, row_scales = quantize_rows(x)
    if int8_gemv.READY and x.shape[0] == 1:
        product = int8_gemv.gemv(xq, weight)
    elif x.shape[0] >= FLOAT_INT8_ROWS and not int8_dot_flags():
        product = F.linear(xq.float(), weight.float())
    else:
        product = torch._int_mm(xq, weight.t())
    return (product * (row_scales * scales.float())).to(x.dtype)


class Int8Linear(nn.Module):
    """y = x @ (q * s)^T + b with q int8 [N, K] and s [N] in the activation dtype (on CPU with
    x quantised per row, ``int8_dynamic_mm``)."""

    def __init__(self, in_features: int, out_features: int, bias: bool, dtype: torch.dtype, device=None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.empty(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("scales", torch.empty(out_features, dtype=dtype, device=device))
        self.register_buffer("bias", torch.empty(out_features, dtype=dtype, device=device) if bias else None)

    @classmethod
    def from_weight(cls, weight: torch.Tensor, bias: torch.Tensor | None = None) -> "Int8Linear":
        module = cls(weight.shape[1], weight.shape[0], bias is not None, weight.dtype, weight.device)
        q, scales = quantize_int8(weight)
        module.weight.copy_(q)
        module.scales.copy_(scales)
        if bias is not None:
            module.bias.copy_(bias.detach())
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if x.device.type == "cpu":
            out = int8_dynamic_mm(rows, self.weight, self.scales)
        else:
            out = F.linear(rows, self.weight.to(x.dtype)) * self.scales.to(x.dtype)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)


# ---- whole models ----------------------------------------------------------------------
def _linear_factory(mode: str, group_size: int) -> Callable[[torch.Tensor, torch.Tensor | None], nn.Module | None]:
    def make(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module | None:
        if mode == "int8":
            return Int8Linear.from_weight(weight, bias)
        group = int4_group(weight.shape[1], group_size)
        if group is None or weight.shape[0] % 16:  # the kernel's shape rules; such a layer stays int8
            return Int8Linear.from_weight(weight, bias)
        return Int4Linear.from_weight(weight, group, bias)
    return make


class QuantExperts(nn.Module):
    """Routed experts with one quantised (gate_up, down) pair per expert; same maths as
    transformers' ``GraniteMoeHybridExperts`` (tokens grouped by expert, weighted, summed)."""

    def __init__(self, experts: nn.Module, make: Callable) -> None:
        super().__init__()
        self.num_experts, self.act_fn = experts.num_experts, experts.act_fn
        self.gate_up = nn.ModuleList(make(experts.gate_up_proj[e], None) for e in range(self.num_experts))
        self.down = nn.ModuleList(make(experts.down_proj[e], None) for e in range(self.num_experts))

    def forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                top_k_weights: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(hidden_states)
        for expert in torch.unique(top_k_index).tolist():
            token_idx, slot = torch.where(top_k_index == expert)
            gate, up = self.gate_up[expert](hidden_states[token_idx]).chunk(2, dim=-1)
            expert_out = self.down[expert](self.act_fn(gate) * up) * top_k_weights[token_idx, slot, None]
            out.index_add_(0, token_idx, expert_out.to(out.dtype))
        return out


@torch.no_grad()
def quantize(model: nn.Module, mode: str, group_size: int = 128) -> nn.Module:
    """Quantise ``model``'s linear layers and experts in place; returns the model."""
    if mode not in QUANTS:
        raise ValueError(f"unknown quantisation {mode!r}; choose one of {', '.join(QUANTS)}")
    if mode == "none":
        return model
    quantize_children(model, mode, group_size)
    mark_quantized(model, mode, group_size)
    return model


def mark_quantized(model: nn.Module, mode: str, group_size: int) -> None:
    """Record how ``model`` is quantised and get its kernels ready (every way a quantised model
    is made ends here): the one-row int8 and int4 kernels when it has such layers on the CPU."""
    model.feldspar_quant = {"mode": mode, "group_size": group_size}
    kinds = {type(m) for m in model.modules()
             if isinstance(m, (Int8Linear, Int4Linear)) and m.weight.device.type == "cpu"}
    if Int8Linear in kinds:
        int8_gemv.prepare()
    if Int4Linear in kinds:
        int4_gemv.prepare()


def quantize_children(module: nn.Module, mode: str, group_size: int = 128) -> None:
    """Quantise the linear layers and experts inside ``module`` (not ``module`` itself) in place."""
    _replace_modules(module, _linear_factory(mode, group_size))


def quantize_linear(weight: torch.Tensor, bias: torch.Tensor | None, mode: str, group_size: int = 128) -> nn.Module:
    """One quantised linear layer (Int8Linear or Int4Linear, as ``quantize`` would choose) from a weight."""
    return _linear_factory(mode, group_size)(weight, bias)


def _replace_modules(model: nn.Module, make: Callable) -> None:
    """Swap every ``nn.Linear`` and fused-experts module for what ``make`` builds from its weights."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            replacement = None
            if isinstance(child, nn.Linear):  # OneDnnLinear too
                replacement = make(child.weight, child.bias)
            elif hasattr(child, "gate_up_proj") and hasattr(child, "down_proj") and child.gate_up_proj.dim() == 3:
                replacement = QuantExperts(child, make)
            if replacement is not None:
                setattr(parent, name, replacement)


def quant_name(model: nn.Module) -> str:
    """``none``, ``int8`` or ``int4``: how this model's weights are stored."""
    spec = getattr(model, "feldspar_quant", None)
    return spec.get("mode", "none") if isinstance(spec, dict) else "none"


# ---- quantised checkpoints -------------------------------------------------------------
def is_quantized_dir(path: str | Path) -> bool:
    return (Path(path) / QUANT_FILE).is_file()


def save_quantized(model: nn.Module, tokenizer, out_dir: str | Path) -> Path:
    """Write a quantised model as config + tokenizer + quantized.safetensors + quant.json."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    portable = {f"{name}.weight": module.portable_weight()  # int4 in the CPU packing, whichever device
                for name, module in model.named_modules() if isinstance(module, Int4Linear)}
    tensors = {name: portable.get(name, t).detach().contiguous().cpu() for name, t in model.state_dict().items()}
    seen: dict[int, str] = {}
    for name in list(tensors):  # tied weights: safetensors stores one tensor per storage
        ptr = tensors[name].untyped_storage().data_ptr()
        if ptr in seen:
            tensors[name] = tensors[name].clone()
        seen.setdefault(ptr, name)
    save_file(tensors, str(out / WEIGHTS_FILE))
    _keep_random_marker(model, out)
    spec = model.feldspar_quant
    (out / QUANT_FILE).write_text(json.dumps(checkpoint_spec(spec["mode"], spec["group_size"], float_dtype(model))),
                                  encoding="utf-8")
    return out


def checkpoint_spec(mode: str, group_size: int, dtype: str) -> dict:
    """What quant.json says: the mode, group size and float dtype, and for int4 the block of rows
    of the CPU packing its weights are in (``int4_packing.cpu_int4_block``, which depends on the CPU)."""
    spec = {"mode": mode, "group_size": group_size, "dtype": dtype}
    return {**spec, "int4_cpu_block": cpu_int4_block()} if mode == "int4" else spec


def _keep_random_marker(model: nn.Module, out: Path) -> None:
    """A quantised copy of a random-weight checkpoint stays labelled random."""
    import shutil

    from feldspar.model.names import RANDOM_MARKER_FILE as MARKER_FILE

    source = Path(getattr(model.config, "_name_or_path", "") or "")
    if str(source) and (source / MARKER_FILE).is_file():
        shutil.copy2(source / MARKER_FILE, out / MARKER_FILE)


def float_dtype(model: nn.Module) -> str:
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point():
            return str(tensor.dtype).removeprefix("torch.")
    return "float32"


def load_quantized(path: str | Path, device: torch.device) -> nn.Module:
    """Rebuild a model saved by ``save_quantized`` without materialising full-precision weights."""
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path)
    spec = json.loads((path / QUANT_FILE).read_text(encoding="utf-8"))
    config = AutoConfig.from_pretrained(path)
    dtype = getattr(torch, spec["dtype"])
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    skeleton = _meta_skeleton(model, spec["mode"], spec["group_size"], dtype)
    for file in weight_files(path):  # shard by shard: peak memory is the quantised model
        unexpected = skeleton.load_state_dict(read_owned(file, device), strict=False, assign=True).unexpected_keys
        if unexpected:
            raise ValueError(f"quantised checkpoint has unknown tensors: {', '.join(unexpected[:3])}")
    rebuild_nonpersistent(skeleton, device)
    for module in skeleton.modules():
        if isinstance(module, Int4Linear):
            module.to_device_layout(spec.get("int4_cpu_block"))  # absent (older checkpoints): this machine's
    mark_quantized(skeleton, spec["mode"], spec["group_size"])
    return skeleton.eval()


def read_owned(file: Path, device: torch.device, keys: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file, each copied into its own allocation: safetensors may hand
    out views at 8-byte offsets, and ATen's int8/int4 CPU kernels crash on such weights."""
    from safetensors import safe_open

    with safe_open(str(file), "pt", device=str(device)) as handle:
        return {key: handle.get_tensor(key).clone() for key in (handle.keys() if keys is None else keys)}


def weight_files(path: Path) -> list[Path]:
    """``quantized.safetensors``, or the shards its index (written piece by piece) names."""
    index = path / INDEX_FILE
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return [path / name for name in sorted(set(weight_map.values()))]
    return [path / WEIGHTS_FILE]


def _meta_skeleton(model: nn.Module, mode: str, group_size: int, dtype: torch.dtype) -> nn.Module:
    """Swap meta ``nn.Linear``/experts for empty quantised modules of the same shapes."""
    def make(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module | None:
        n, k = weight.shape
        if mode == "int8":
            return Int8Linear(k, n, bias is not None, dtype, device="meta")
        group = int4_group(k, group_size)
        if group is None or n % 16:
            return Int8Linear(k, n, bias is not None, dtype, device="meta")
        return Int4Linear(k, n, bias is not None, dtype, group, device="meta")

    _replace_modules(model, make)
    return model


def rebuild_nonpersistent(model: nn.Module, device: torch.device) -> None:
    """Rotary tables are not saved (non-persistent buffers): build them again on ``device``."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if any(b.is_meta for b in child.buffers(recurse=False)) and hasattr(child, "inv_freq"):
                with torch.device(device):
                    setattr(parent, name, type(child)(model.config))
    left = [n for n, b in model.named_buffers() if b.is_meta] + [n for n, p in model.named_parameters() if p.is_meta]
    if left:
        raise ValueError(f"quantised checkpoint is missing tensors: {', '.join(left[:3])}")
