"""The one-row int8 matmul of a decode step: Feldspar's AVX-512 VNNI (or AVX2) kernel, built on this machine.

Contract: ``prepare()`` makes ``torch.ops.feldspar.int8_gemv(x, w)`` (x int8 [1, K], w int8
[N, K] -> int32 [1, N], exactly ``torch._int_mm(x, w.t())``) and its fp32 form
``int8_gemv_f32(x, w, scales)`` (x fp32 [1, K] quantised per row inside, as ``quantize_rows``
does, scaled back by row and channel -> fp32 [1, N]: ``quant.int8_dynamic_mm``'s whole product
in one call) usable and sets ``READY``; it returns whether it is. ``quant.int8_dynamic_mm``
sends one-row products there when ``READY`` and everything else to ``torch._int_mm``.
``prepare`` builds model/csrc/int8_gemv.cpp once per machine and torch version with torch's
extension builder (g++, which inductor's compiled decode needs too, and the locked ``ninja``)
into ``$TORCH_EXTENSIONS_DIR/feldspar`` (default ~/.cache/torch_extensions/feldspar), says so on
stderr while it builds (~40 s; a lock file a killed build left is cleared after ten minutes),
checks the op against integer matmuls, and registers its shape function so compiled decode
regions can call it. The same library holds the one-row int4 kernels (model/csrc/int4_gemv.cpp
and int4_gemv_avx2.cpp, driven by ``model.int4_gemv``) and the decode attention kernels
(model/csrc/attend_f32.cpp and attend_bf16.cpp, ``model.attend``). A CPU with AVX2 and no
AVX-512 VNNI gets the same op from model/csrc/int8_gemv_avx2.cpp (``vpmaddubsw`` on |w| and x
with w's sign), with the AVX2 int4 kernel and the fp32 attention, built as their own library.
Where the CPU has neither, ``FELDSPAR_INT8_GEMV=off``, or the build or the check fails,
``READY`` stays False (one warning line) and ``_int_mm`` does everything.

Why: ATen's ``_int_mm`` (oneDNN) streams a one-row product's weights at 15-20 GB/s on the
AMD EPYC measured, where two threads read memory at ~30; a decode step is ~140 such products.
This kernel reads each weight row once, front to back, and measured 29-33 GB/s on h-350m's
shapes there (docs/benchmarks.md). No maintained library has it: FBGEMM's one-row product
streams 20 GB/s but costs ~25 us of fixed work a call. Knows torch only.
"""

from __future__ import annotations

import functools
import os
import sys
import time
import warnings
from pathlib import Path

import torch

from feldspar.model.cpu import cpu_flags

SOURCE = Path(__file__).parent / "csrc" / "int8_gemv.cpp"
INT4_SOURCE = SOURCE.with_name("int4_gemv.cpp")  # its own CPU features by function attributes
INT4_AVX2_SOURCE = SOURCE.with_name("int4_gemv_avx2.cpp")  # likewise; in both libraries
ATTEND_SOURCE = SOURCE.with_name("attend_bf16.cpp")  # likewise
ATTEND_F32_SOURCE = SOURCE.with_name("attend_f32.cpp")  # likewise; in both libraries
NAME = "feldspar_int8_gemv"
FLAGS = ["-O3", "-mavx512f", "-mavx512bw", "-mavx512vnni", "-fopenmp"]
ENV = "FELDSPAR_INT8_GEMV"
INSTRUCTIONS = frozenset({"avx512f", "avx512bw", "avx512_vnni"})  # what the kernel is compiled for
AVX2_SOURCE = SOURCE.with_name("int8_gemv_avx2.cpp")  # the same op alone, for CPUs without the above
AVX2_NAME, AVX2_FLAGS = "feldspar_int8_gemv_avx2", ["-O3", "-mavx2", "-fopenmp"]
AVX2_INSTRUCTIONS = frozenset({"avx2"})
STALE_LOCK_S = 600  # a build takes under a minute: a lock this old was left by a killed one
READY = False


def enabled(env: str, instructions: frozenset[str]) -> bool:
    """The CPU has ``instructions`` and the switch ``env`` is not off (0, off, false, no)."""
    off = os.environ.get(env, "").strip().lower() in {"0", "off", "false", "no"}
    return not off and instructions <= cpu_flags()


def wanted() -> bool:
    """The CPU has the instructions of one of the kernels and the user has not turned it off."""
    return enabled(ENV, INSTRUCTIONS) or enabled(ENV, AVX2_INSTRUCTIONS)


def kernel() -> str:
    """Which kernel this CPU gets: "AVX-512 VNNI", else "AVX2" (model/csrc/int8_gemv_avx2.cpp)."""
    return "AVX-512 VNNI" if INSTRUCTIONS <= cpu_flags() else "AVX2"


def describe() -> str:
    """What does this machine's one-row int8 products, in a few words (builds nothing)."""
    if not (INSTRUCTIONS | AVX2_INSTRUCTIONS) & cpu_flags():
        return "int8 decode matmuls by ATen's _int_mm (no AVX-512 VNNI or AVX2 for Feldspar's kernel)"
    if not wanted():
        return f"int8 decode matmuls by ATen's _int_mm (Feldspar's kernel turned off by {ENV})"
    if _loaded.cache_info().currsize and not READY:  # prepare() ran, and the build or check failed
        return "int8 decode matmuls by ATen's _int_mm (Feldspar's kernel failed to build here)"
    return f"int8 decode matmuls by Feldspar's {kernel()} kernel (built once per machine)"


def build_directory() -> Path:
    """Where the built library lives: per torch version, beside torch's own extensions."""
    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions")
    return root / "feldspar" / f"torch-{torch.__version__}"


def prepare() -> bool:
    """Build (once per machine), load and check the kernel; returns ``READY``."""
    global READY
    READY = wanted() and _loaded()
    return READY


@functools.cache
def _loaded() -> bool:
    try:
        _build_and_load()
        _register_fake()
        _check()
    except Exception as exc:  # noqa: BLE001 - any failure means the maintained kernel does it all
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        warnings.warn(f"int8 decode kernel not used ({first[:200]}); torch._int_mm does every int8 matmul",
                      RuntimeWarning, stacklevel=3)
        return False
    return True


def _registered() -> bool:
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key("feldspar::int8_gemv", "CPU")
    except RuntimeError:  # no such operator yet
        return False


def _build_and_load() -> None:
    from torch.utils import cpp_extension

    if _registered():  # loaded already in this process (the op namespace is process-wide)
        return
    _put_ninja_on_path()
    out = build_directory()
    out.mkdir(parents=True, exist_ok=True)
    clear_stale_lock(out)
    if kernel() == "AVX2":  # without the kernels that need AVX-512
        name, flags = AVX2_NAME, AVX2_FLAGS
        sources = [str(AVX2_SOURCE), str(INT4_AVX2_SOURCE), str(ATTEND_F32_SOURCE)]
    else:
        name, flags = NAME, FLAGS
        sources = [str(SOURCE), str(INT4_SOURCE), str(INT4_AVX2_SOURCE), str(ATTEND_SOURCE), str(ATTEND_F32_SOURCE)]
    if not any(out.glob(f"{name}.so")):
        print("feldspar: building the int8 decode kernel for this CPU (once, ~40 s)", file=sys.stderr, flush=True)
    cpp_extension.load(name, sources, extra_cflags=flags, extra_ldflags=["-fopenmp"], build_directory=str(out),
                       is_python_module=False, verbose=False)


def clear_stale_lock(out: Path, older_than_s: float = STALE_LOCK_S) -> bool:
    """Remove the builder's lock file when a killed build left it (torch would wait on it forever)."""
    lock = out / "lock"
    try:
        if time.time() - lock.stat().st_mtime > older_than_s:
            lock.unlink()
            return True
    except FileNotFoundError:
        pass
    return False


def _put_ninja_on_path() -> None:
    """torch's builder runs ``ninja``; the locked ``ninja`` package ships one inside the venv."""
    try:
        import ninja
    except ImportError:
        return
    bin_dir = str(ninja.BIN_DIR)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


def _register_fake() -> None:
    """The outputs' shapes for tracing (torch.compile's fake tensors)."""
    def int8_gemv_shape(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return x.new_empty((x.shape[0], w.shape[0]), dtype=torch.int32)

    def int4_gemv_shape(x: torch.Tensor, w: torch.Tensor, scales_zeros: torch.Tensor, *_: int) -> torch.Tensor:
        return x.new_empty((x.shape[0], scales_zeros.shape[1]))  # both int4 ops: (group) or (group, block)

    def int8_gemv_f32_shape(x: torch.Tensor, w: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        return x.new_empty((x.shape[0], w.shape[0]))

    torch.library.register_fake("feldspar::int8_gemv", int8_gemv_shape)
    torch.library.register_fake("feldspar::int8_gemv_f32", int8_gemv_f32_shape)
    torch.library.register_fake("feldspar::int4_gemv_f32", int4_gemv_shape)
    if kernel() != "AVX2":
        torch.library.register_fake("feldspar::int4_gemv", int4_gemv_shape)


def _check() -> None:
    """Exact against the integer matmul, -128 and a K that is no multiple of 64 included, for x
    with and without -128 (the AVX2 kernel takes another path without)."""
    gen = torch.Generator().manual_seed(0)
    for n, k in ((70, 200), (33, 768)):
        w = torch.randint(-128, 128, (n, k), dtype=torch.int8, generator=gen)
        w[0, 0] = -128
        for low in (-128, -127):
            x = torch.randint(low, 128, (1, k), dtype=torch.int8, generator=gen)
            x[0, 0] = low
            if not torch.equal(torch.ops.feldspar.int8_gemv(x, w), x.int() @ w.int().t()):
                raise RuntimeError("int8_gemv disagrees with the integer matmul")
        xf, scales = torch.randn(1, k, generator=gen), torch.rand(n, generator=gen) + 0.5
        codes, row_scale = quantize_rows(xf)
        if not torch.equal(torch.ops.feldspar.int8_gemv_f32(xf, w, scales),
                           (codes.int() @ w.int().t()) * (row_scale * scales)):
            raise RuntimeError("int8_gemv_f32 disagrees with quantize_rows and the integer matmul")


def gemv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``torch._int_mm(x, weight.t())`` for one row ``x`` [1, K] by the kernel (``READY`` only)."""
    return torch.ops.feldspar.int8_gemv(x, weight)


def gemv_f32(x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """One fp32 row ``x`` [1, K] quantised, times ``weight``, scaled back (``READY`` only)."""
    return torch.ops.feldspar.int8_gemv_f32(x, weight, scales)


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8 of activations: (int8 [M, K], fp32 scales [M, 1]); the kernels' way too."""
    xf = x.float()
    scales = xf.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / 127
    return torch.round(xf / scales).to(torch.int8), scales
