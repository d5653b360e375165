"""Named points where a test can kill the ingest with SIGKILL, to prove crash safety.

``FELDSPAR_CRASH_AT=point:n`` (read once, at import) or ``arm(point, n)`` makes the n-th
pass (1-based) of ``point`` kill this very process with SIGKILL: a real ``kill -9`` at a
known place, so a crash test can check that it died inside the window it means to test,
every time. ``ingest`` names its points after the step just done (``announced``,
``part_upserted`` (one embedding batch of a write batch), ``upserted``, ``deleted``,
``committed``, ``pruned``; a reindex's switch: ``swap_marked``, ``swap_dropped``,
``swap_renamed``). Unarmed, a pass costs one comparison.

This module does not know what the points mean.
"""

from __future__ import annotations

import os
import signal

_point, _, _nth = os.environ.get("FELDSPAR_CRASH_AT", "").partition(":")
_target = int(_nth) if _nth.isdigit() else 1
_passes = 0


def arm(point: str, nth: int = 1) -> None:
    """Die at the ``nth`` pass of ``point`` from now on (for a forked test process)."""
    global _point, _target, _passes
    _point, _target, _passes = point, nth, 0


def reached(point: str) -> None:
    """Count a pass of ``point``; die here (SIGKILL) if it is the armed one."""
    global _passes
    if point != _point:
        return
    _passes += 1
    if _passes == _target:
        os.kill(os.getpid(), signal.SIGKILL)
