"""Parser stand-ins that misbehave on purpose, for the sandbox tests (run in subprocesses)."""

from __future__ import annotations

import os
import signal


def echo(value: str) -> str:
    return value.upper()


def hang(value: str) -> str:
    while True:
        pass


def die(value: str) -> str:
    os.kill(os.getpid(), signal.SIGKILL)
    return value


def allocate(value: str) -> str:
    hoard = bytearray(8 * 1024**3)  # far above the test's address-space limit
    return str(len(hoard))
