"""fp32 prefill matmuls by oneDNN instead of MKL on AMD CPUs, where MKL's are the slow ones.

Contract: ``use_onednn(model)`` turns every plain ``nn.Linear`` of ``model`` into a
``OneDnnLinear`` in place (the same parameters, the same module tree, still an ``nn.Linear``)
when ``in_use()`` (``ENABLED`` and ``available()``); returns how many. Its forward computes ``F.linear``;
an fp32 CPU input of at least ``ROWS`` rows (a prefill chunk) goes to oneDNN's linear kernel,
``torch.ops.mkldnn._linear_pointwise``, the one inductor emits for CPU linears, which torch
bundles. Fewer rows (decode, and the one-row matmuls compiled decode regions turn into
inductor reductions) stay ``F.linear``. Both compute the same product to fp32 rounding
(~1e-6 relative), as MKL does at different row counts, so chunked and whole prefill agree.

Why: on the AMD EPYC measured, MKL's fp32 GEMM runs h-350m's prefill shapes (1,024-2,048 rows
by 768-2,048 inputs by 768-4,096 outputs) at 114-162 GFLOP/s and oneDNN's at 154-205, 1.2-1.7x
(docs/benchmarks.md); bf16 matmuls already use oneDNN. Intel CPUs keep MKL (not measured
there). ``available`` checks once per process that the op exists and agrees with ``F.linear``;
where it does not, nothing is changed. Knows torch only.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from feldspar.model.cpu import cpu_flags, cpu_vendor

ROWS = 256  # from this many rows an fp32 CPU linear goes to oneDNN
ENABLED = cpu_vendor() == "AuthenticAMD" and "avx512f" in cpu_flags()


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` by oneDNN, for any leading dimensions of ``x``."""
    rows = x.reshape(-1, x.shape[-1])
    out = torch.ops.mkldnn._linear_pointwise(rows, weight, bias, "none", [], "")
    return out.reshape(*x.shape[:-1], weight.shape[0])


@functools.cache
def available() -> bool:
    """Whether oneDNN's linear is here and computes ``F.linear`` (checked once, with a bias)."""
    generator = torch.Generator().manual_seed(0)
    x, weight, bias = (torch.randn(*shape, generator=generator) for shape in ((2, ROWS, 96), (80, 96), (80,)))
    try:
        out = onednn_linear(x, weight, bias)
    except (AttributeError, RuntimeError, NotImplementedError):
        return False
    return out.shape == (2, ROWS, 80) and torch.allclose(out, F.linear(x, weight, bias), rtol=1e-5, atol=1e-5)


def in_use() -> bool:
    """Whether fp32 prefill matmuls go to oneDNN on this machine (the one place that decides)."""
    return ENABLED and available()


class OneDnnLinear(nn.Linear):
    """``nn.Linear`` whose fp32 CPU forwards of at least ``ROWS`` rows run on oneDNN."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and x.device.type == "cpu" and x.numel() >= ROWS * self.in_features:
            return onednn_linear(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)


def use_onednn(model: nn.Module) -> int:
    """Make ``model``'s plain ``nn.Linear`` layers ``OneDnnLinear`` (where enabled and available)."""
    if not in_use():
        return 0
    linears = [m for m in model.modules() if type(m) is nn.Linear]
    for module in linears:
        module.__class__ = OneDnnLinear
    return len(linears)
