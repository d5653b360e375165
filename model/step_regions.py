"""The decode step's compiled regions: ``torch.compile``d once, called without dynamo once warm.

Contract: ``compile_regions(eager, backend, on_failure)`` gives, for each eager region function
of ``model.decode_step``, a ``Region``. Calling a Region runs its ``torch.compile``d function
(inductor with ``compile_options`` by default); a compilation that fails warns once, calls
``on_failure()`` and runs the eager function (``with_fallback``, which the prefill scan uses
too). Inside ``stepping(regions, signature, warm)``, which ``decode_step.step`` puts around
every step:

- a cold step (``warm`` False, dynamo checking every guard) records for each region, per model
  ``signature`` and argument structure (the lengths of tuple arguments, which ones are None),
  which of dynamo's compiled entries served the call;
- a warm step calls that entry's transformed code itself, without dynamo's frame evaluation
  and cache lookup (50-70 us a region, 18 regions a token on h-350m: ~1 ms of a 13 ms token).

A structure served by two different entries, or by one that resumes after a graph break, is
never called directly; those calls, and any structure a cold step did not see, go through
dynamo (with the step's guard stance). Each Region compiles its own copy of the eager code, so
the cache entries it reads were made by its own backend; Regions are kept per backend and
options, so a later ``compile_regions`` finds dynamo's entries (and what it learned) warm.

Why it is safe to skip the guards: what the graphs depend on is the model's ``signature``
(config, classes, every parameter's layout) and the step's canonical inputs, as for dynamo's
``skip_guard_eval_unsafe`` stance the step already used. Inductor's per-call input size
asserts are off (``compile_options``) for the same reason. Knows torch only.
"""

from __future__ import annotations

import inspect
import types
import warnings
from contextlib import contextmanager
from typing import Callable, Iterable

import torch

try:  # dynamo's own listing of a code object's compiled entries (its recompilation messages use it)
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list
except ImportError:  # pragma: no cover - a torch without it: every call goes through dynamo
    _debug_get_cache_entry_list = None

GEMV = True  # compiled regions' one-row matmuls as inductor reductions (see compile_options)
AMBIGUOUS = object()  # a structure that two compiled entries served: never called directly
_kept: dict[tuple, dict[str, "Region"]] = {}  # (backend, options) -> the regions compiled for them


class _Now:
    """The step being run: its model signature (None outside a step) and whether it is warm."""
    signature: int | None = None
    warm = False


_now = _Now()


def structure(args: tuple) -> tuple:
    """What tells a region's graphs apart beyond the signature: tuple lengths and None-ness."""
    return tuple(len(a) if type(a) is tuple else a is None for a in args)


class Region:
    """One compiled region: a private copy of the eager function, its compiled form and the
    entries learnt per (signature, structure)."""

    def __init__(self, name: str, fn: Callable, backend, options: dict | None, on_failure: Callable[[], None]):
        self.name = name
        self.source = types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__,
                                         fn.__closure__)
        self.compiled = with_fallback(torch.compile(self.source, dynamic=False, backend=backend, options=options),
                                      fn, on_failure, "the decode step", "the eager step")
        self.params = tuple(inspect.signature(fn).parameters)
        self.direct: dict[tuple, object] = {}

    def __call__(self, *args):
        if _now.warm:
            direct = self.direct.get((_now.signature, structure(args)))
            if direct is not None and direct is not AMBIGUOUS:
                return direct(*args)
        out = self.compiled(*args)
        if _now.signature is not None and not _now.warm:
            self.learn(args)
        return out

    def learn(self, args: tuple) -> None:
        """Record the compiled entry whose guards ``args`` pass (the one dynamo just ran)."""
        if _debug_get_cache_entry_list is None:  # pragma: no cover - see the import
            return
        key = (_now.signature, structure(args))
        local = dict(zip(self.params, args))
        try:
            code = next((e.code for e in _debug_get_cache_entry_list(self.source.__code__)
                         if e.guard_manager.check(local)), None)
        except (AttributeError, TypeError):  # pragma: no cover - another torch's entries
            code = None
        if code is None or any(n.startswith("__resume") for n in code.co_names):
            self.direct[key] = AMBIGUOUS
            return
        known = self.direct.get(key)
        if known is None:
            self.direct[key] = types.FunctionType(code, self.source.__globals__, self.name)
        elif known is AMBIGUOUS or known.__code__ is not code:
            self.direct[key] = AMBIGUOUS

    def forget(self, signature: int) -> None:
        for key in [k for k in self.direct if k[0] == signature]:
            del self.direct[key]


def with_fallback(compiled_fn: Callable, eager: Callable, on_failure: Callable[[], None], what: str,
                  instead: str) -> Callable:
    """``compiled_fn``, or, on the call where it fails to compile, ``on_failure()`` (which puts the
    eager code in charge for later calls), one warning naming ``what`` and ``instead``, and ``eager``."""
    def call(*args):
        try:
            return compiled_fn(*args)
        except Exception as exc:  # dynamo/inductor raise many classes (no compiler, unsupported op…)
            on_failure()
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            warnings.warn(f"torch.compile of {what} failed, using {instead}: {first}", RuntimeWarning, stacklevel=3)
            return eager(*args)
    return call


def compile_regions(eager: dict[str, Callable], backend, on_failure: Callable[[], None]) -> dict[str, Region]:
    """The compiled regions for ``backend`` (kept: the same ones for the same backend and options)."""
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 32)
    options = compile_options() if backend == "inductor" else None
    key = (backend, repr(options))
    if key not in _kept:
        _kept[key] = {name: Region(name, fn, backend, options, on_failure) for name, fn in eager.items()}
    return _kept[key]


@contextmanager
def stepping(regions: Iterable, signature: int, warm: bool):
    """Run one decode step of the model ``signature``: cold steps learn, warm ones call directly."""
    if not warm:
        for region in regions:
            if isinstance(region, Region):
                region.forget(signature)
    _now.signature, _now.warm = signature, warm
    try:
        yield
    finally:
        _now.signature, _now.warm = None, False


def compile_options() -> dict | None:
    """Inductor options for the regions: no per-call input size asserts (see the module's
    docstring: ~15 per Mamba layer, ~0.5 ms a token) and, unless ``GEMV`` is off, a
    region's one-row matmuls (every float linear layer of a step) as inductor's own fused
    multiply-and-sum over the weight, its ``decompose_mm`` pass, instead of a call to the
    BLAS GEMV: measured 2.6x MKL's fp32 GEMV and 1.65x its bf16 one (27.6 vs 10.5 GB/s of
    weights, 2 threads, AMD EPYC; docs/benchmarks.md). The pass is inductor's, off by default,
    with CPU size limits kept as module globals; they are lifted so layers of any width qualify."""
    options: dict = {"size_asserts": False}
    if not GEMV:
        return options
    try:
        from torch._inductor.fx_passes import decompose_mem_bound_mm as decompose
    except ImportError:  # pragma: no cover - every supported torch has it
        return options
    decompose.cpu_max_other_dimension_decomposition = max(decompose.cpu_max_other_dimension_decomposition, 1 << 30)
    options["post_grad_fusion_options"] = {"decompose_mm_pass": {}}
    return options
