"""What this CPU is: its /proc/cpuinfo fields, feature flags and vendor.

The kernel choices that depend on the machine (bf16 by default, oneDNN fp32 matmuls, bf16 int4
prefill, attention by matmuls) and the benchmarks' headers read these. Linux only; elsewhere
every answer is empty. Knows nothing of models.
"""

from __future__ import annotations

import functools
from pathlib import Path


@functools.cache
def _cpuinfo_lines() -> tuple[str, ...]:
    """/proc/cpuinfo's lines, read once per process (several modules ask at import)."""
    try:
        return tuple(Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines())
    except OSError:
        return ()


def cpu_info(*keys: str) -> str:
    """The first value of a /proc/cpuinfo field (Linux; "" elsewhere)."""
    line = next((ln for ln in _cpuinfo_lines() if ln.startswith(keys)), "")
    return line.partition(":")[2].strip()


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere), once per process: the
    decode step's kernel switches ask every token."""
    return frozenset(cpu_info("flags", "Features").split())


def cpu_vendor() -> str:
    """The CPU's vendor id, e.g. ``GenuineIntel`` or ``AuthenticAMD`` ("" where unknown)."""
    return cpu_info("vendor_id")
