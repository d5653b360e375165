"""Run the real `feldspar` entry point in-process and capture what a user would see."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import pytest


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(args: list[str], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> CliResult:
    from feldspar.cli import main

    monkeypatch.setattr(sys, "argv", ["feldspar", *args])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    code = exit_info.value.code
    return CliResult(code if isinstance(code, int) else (0 if code is None else 1), captured.out, captured.err)


def assert_one_error_line(result: CliResult, code: int, needle: str) -> str:
    """The run failed with ``code`` and printed exactly one stderr line, ``error: …`` holding ``needle``."""
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert result.code == code, (result.code, result.err)
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], result.err
    return lines[0]
