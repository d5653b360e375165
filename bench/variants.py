"""Engine variants for ``bench.engine``: the same random weights in another dtype and quantisation, and their quality.

A variant is (dtype, quant): the benchmark's base model (its ``--dtype``, full precision)
plus, for each quantisation asked for, a copy cast to the dtype the loader would pick on
this machine (``loader.dtype_choice("auto")``: bf16 where the CPU has native bf16, the
dtype ATen's weight-only kernels are fast with) and quantised by ``model.quant``. All
share one set of weights, so their rows compare like with like.

Quality, per variant, against the fp32 model: one teacher-forced forward over
``quality_tokens`` random ids, every position's logits compared (max and mean absolute
difference) and whether each position's argmax (its greedy pick) agrees. The int8 layers compute
every row on its own (activations rounded per row), so this forward measures what decode
gives too. Random weights
say little about how a trained checkpoint degrades; the numbers show that the quantised
kernels compute a close function, nothing more. Knows torch models; nothing of the CLI.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from feldspar.model.cpu import cpu_flags, cpu_info
from feldspar.model.loader import NATIVE_BF16_FLAGS, dtype_choice
from feldspar.model.quant import quantize

SHORT = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
REPORTED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", *NATIVE_BF16_FLAGS, "amx_int8", "amx_tile")


@dataclass(frozen=True)
class Variant:
    dtype: str
    quant: str

    @property
    def label(self) -> str:
        return " ".join(["feldspar", SHORT.get(self.dtype, self.dtype)] + ([self.quant] if self.quant != "none" else []))


def variants(base_dtype: str, quants: tuple[str, ...]) -> list[Variant]:
    """The base (full precision, ``base_dtype``) first, then, when any quantisation is asked for,
    the machine's dtype unquantised and with each quantisation."""
    fast = str(dtype_choice("auto", torch.device("cpu"))[0]).removeprefix("torch.")
    found = [Variant(base_dtype, "none")]
    quants = tuple(q for q in quants if q != "none")
    for quant in (("none",) + quants) if quants else ():
        variant = Variant(fast, quant)
        if variant not in found and (quant != "none" or fast != base_dtype):
            found.append(variant)
    return found


def derive(base: torch.nn.Module, variant: Variant) -> torch.nn.Module:
    """A copy of ``base`` in ``variant``'s dtype and quantisation (``base`` itself for the base)."""
    dtype = getattr(torch, variant.dtype)
    if variant.quant == "none" and next(base.parameters()).dtype == dtype:
        return base
    return quantize(copy.deepcopy(base).to(dtype), variant.quant)


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of every parameter and buffer (quantised weights are buffers)."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def cpu_header() -> dict[str, Any]:
    """The CPU's model name and the flags that decide which kernels are fast."""
    flags = cpu_flags()
    return {"cpu": cpu_info("model name"), "cpu_flags": [f for f in REPORTED_FLAGS if f in flags]}


@torch.inference_mode()
def all_logits(model: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    out = model(input_ids=torch.tensor([ids], device=next(model.parameters()).device), use_cache=False)
    return out.logits[0].float()


def quality(reference: torch.Tensor, model: torch.nn.Module, ids: list[int]) -> dict[str, Any]:
    """Logit difference and greedy agreement of ``model`` against fp32 ``reference`` logits."""
    logits = all_logits(model, ids)
    diff = (logits - reference).abs()
    agree = (logits.argmax(-1) == reference.argmax(-1)).float().mean().item()
    return {"positions": len(ids), "max_logit_diff": round(diff.max().item(), 4),
            "mean_logit_diff": round(diff.mean().item(), 5), "greedy_agreement": round(agree, 4),
            "logit_scale": round(reference.abs().max().item(), 3)}
