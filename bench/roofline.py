"""Measure this machine's matmul FLOP/s and memory bandwidth; count a model's work per token.

The roofline for the engine benchmark: prefill is compute-bound, so its achieved FLOP/s
(useful FLOPs / seconds) is compared with the best dense matmul this process can reach (MKL's,
or oneDNN's where the engine's fp32 prefill uses it);
decode is bandwidth-bound, so its achieved bytes/s (weights + state read per token /
seconds) is compared with the best streaming bandwidth (copy, sum, add).

Useful FLOPs are counted analytically: 2 per multiply-add of every weight matrix on every
token (the tied embedding only as the LM head, on the last token of each forward, because
forwards keep one position of logits), causal softmax attention (QK^T and AV), and the
einsums of the chunked Mamba2 (SSD) scan as the reference scan computes them (whole
chunk-by-chunk score blocks at the scan chunk in use). Norms, activations, the
depthwise conv, exp/cumsum, routing and padding are not counted, so a ratio is a lower
bound on how busy the hardware was. Bytes per decode token are the active weights plus the
cache tensors read once; cache writes, activations and the embedding row are not counted.
It knows nothing about the engine, the CLI or wall-clock noise from other processes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from feldspar.model import onednn_linear
from feldspar.model.generation import scan_chunk_for


@dataclass(frozen=True)
class Machine:
    """What this process measured: best matmul FLOP/s (in ``dtype``) and streaming bytes/s."""

    matmul_flops: float
    bandwidth: float
    threads: int
    dtype: str
    bandwidth_by_kernel: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "threads": self.threads,
            "dtype": self.dtype,
            "matmul_gflops": round(self.matmul_flops / 1e9, 2),
            "bandwidth_gbs": round(self.bandwidth / 1e9, 2),
            "bandwidth_by_kernel_gbs": {k: round(v / 1e9, 2) for k, v in self.bandwidth_by_kernel.items()},
        }


def best_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """Fastest of ``repeats`` calls of ``fn`` (after one untimed call)."""
    fn()
    best = float("inf")
    for _ in range(max(repeats, 1)):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def measure_matmul(dtype: torch.dtype = torch.float32, max_size: int = 4096, repeats: int = 4,
                   target_s: float = 0.3) -> float:
    """Best square-matmul FLOP/s; the size doubles from 256 until one call takes ``target_s``.
    In fp32 where the engine's prefill uses oneDNN (model/onednn_linear.py), the better of
    ``torch.matmul`` (MKL) and oneDNN's linear."""
    onednn = dtype == torch.float32 and onednn_linear.in_use()
    size, best = 256, 0.0
    while True:
        a = torch.randn(size, size, dtype=dtype)
        b = torch.randn(size, size, dtype=dtype)
        seconds = best_seconds(lambda: torch.matmul(a, b), repeats)
        if onednn:
            seconds = min(seconds, best_seconds(lambda: onednn_linear.onednn_linear(a, b, None), repeats))
        best = max(best, 2 * size**3 / seconds)
        if seconds >= target_s or size >= max_size:
            return best
        size *= 2


def measure_bandwidth(megabytes: int = 512, repeats: int = 4) -> dict[str, float]:
    """Bytes/s of three streaming kernels on fp32 tensors far larger than the caches."""
    n = megabytes * 1024 * 1024 // 4
    src = torch.rand(n)
    dst = torch.empty_like(src)
    size = src.nbytes
    kernels = {
        "copy": (lambda: dst.copy_(src), 2 * size),  # read + write
        "sum": (lambda: src.sum(), size),  # read
        "add": (lambda: dst.add_(src), 3 * size),  # read two, write one
    }
    return {name: moved / best_seconds(fn, repeats) for name, (fn, moved) in kernels.items()}


def measure_machine(dtype: torch.dtype = torch.float32, quick: bool = False) -> Machine:
    """Matmul FLOP/s in ``dtype`` and the best streaming bandwidth; ``quick`` for tests."""
    flops = measure_matmul(dtype, max_size=256 if quick else 4096, repeats=1 if quick else 4)
    by_kernel = measure_bandwidth(megabytes=8 if quick else 512, repeats=1 if quick else 4)
    return Machine(flops, max(by_kernel.values()), torch.get_num_threads(), str(dtype).removeprefix("torch."),
                   by_kernel)


@dataclass(frozen=True)
class ModelCost:
    """The numbers of a model that set its useful work per token."""

    body_params: int  # active weights applied to every token (no embedding / LM head)
    head_params: int  # LM head (vocab x hidden), applied once per forward
    active_bytes: int  # bytes of the active weights, embedding/LM head included once
    attention_layers: int
    attention_width: int  # query heads x head dim
    mamba_layers: int
    mamba_heads: int
    mamba_head_dim: int
    mamba_state: int
    mamba_chunk: int

    def to_dict(self) -> dict[str, Any]:
        return {"body_params": self.body_params, "head_params": self.head_params,
                "active_weight_bytes": self.active_bytes}


def model_cost(model: torch.nn.Module, active_params: int | None = None) -> ModelCost:
    """Cost numbers from a model; ``active_params`` (total if None) for mixture-of-experts."""
    cfg = model.config
    total = sum(p.numel() for p in model.parameters())
    active = total if active_params is None else active_params
    head = cfg.vocab_size * cfg.hidden_size
    element = next(model.parameters()).element_size()
    layers = list(getattr(getattr(model, "model", None), "layers", []))
    mamba_layers = sum(getattr(layer, "mamba", None) is not None for layer in layers)
    return ModelCost(
        body_params=active - head, head_params=head, active_bytes=active * element,
        attention_layers=len(layers) - mamba_layers,
        attention_width=cfg.num_attention_heads * (cfg.hidden_size // cfg.num_attention_heads),
        mamba_layers=mamba_layers, mamba_heads=getattr(cfg, "mamba_n_heads", 0),
        mamba_head_dim=getattr(cfg, "mamba_d_head", 0), mamba_state=getattr(cfg, "mamba_d_state", 0),
        mamba_chunk=getattr(cfg, "mamba_chunk_size", 256),
    )


def attention_flops(cost: ModelCost, start: int, end: int) -> float:
    """Causal QK^T + AV FLOPs for queries at positions [start, end) over all earlier keys."""
    keys = (end * (end + 1) - start * (start + 1)) // 2
    return 4.0 * cost.attention_layers * cost.attention_width * keys


def scan_flops(cost: ModelCost, tokens: int) -> float:
    """Einsum FLOPs of the chunked Mamba2 scan for one forward of ``tokens`` tokens."""
    chunk = scan_chunk_for(tokens, cost.mamba_chunk)
    n, p = cost.mamba_state, cost.mamba_head_dim
    per_token = 2 * chunk * (n + p) + 4 * n * p  # intra-chunk scores + values; states in + out
    return float(cost.mamba_layers * cost.mamba_heads * per_token * tokens)


def forward_flops(cost: ModelCost, start: int, end: int) -> dict[str, float]:
    """Useful FLOPs of one forward over positions [start, end), by part."""
    tokens = end - start
    return {
        "linear": 2.0 * (cost.body_params * tokens + cost.head_params),
        "attention": attention_flops(cost, start, end),
        "scan": scan_flops(cost, tokens),
    }


def prefill_flops(cost: ModelCost, ends: list[int], start: int = 0) -> dict[str, float]:
    """Useful FLOPs of a chunked prefill whose forwards end at ``ends``, summed by part."""
    totals = {"linear": 0.0, "attention": 0.0, "scan": 0.0}
    for end in ends:
        for part, value in forward_flops(cost, start, end).items():
            totals[part] += value
        start = end
    return totals


def tensor_bytes(obj: Any, _seen: set[int] | None = None) -> int:
    """Bytes of every distinct tensor reachable from ``obj`` (a cache, dict, list, object)."""
    seen = set() if _seen is None else _seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v, seen) for v in obj)
    if hasattr(obj, "__dict__"):
        return tensor_bytes(vars(obj), seen)
    return 0


def decode_bytes(cost: ModelCost, state_bytes: int) -> float:
    """Bytes one decode step must read: the active weights and the state, once each."""
    return float(cost.active_bytes + state_bytes)
