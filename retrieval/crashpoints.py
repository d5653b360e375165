"""Named points where a test can kill the ingest with SIGKILL, to prove crash safety.

``FELDSPAR_CRASH_AT=point:n`` (read once, at import) makes the n-th pass (1-based) of
``point`` kill this very process with SIGKILL: a real ``kill -9`` at a known place, so a
crash test can check that it died inside the window it means to test, every time.
``ingest`` names its points after the step just done (``announced``, ``upserted``,
``deleted``, ``committed``, ``pruned``, ``dropped``). Unset, a pass costs one comparison.

This module does not know what the points mean.
"""

from __future__ import annotations

import os
import signal

_ARMED = os.environ.get("FELDSPAR_CRASH_AT", "")
_POINT, _, _NTH = _ARMED.partition(":")
_TARGET = int(_NTH) if _NTH.isdigit() else 1
_passes = 0


def reached(point: str) -> None:
    """Count a pass of ``point``; die here (SIGKILL) if it is the armed one."""
    global _passes
    if not _ARMED or point != _POINT:
        return
    _passes += 1
    if _passes == _TARGET:
        os.kill(os.getpid(), signal.SIGKILL)
