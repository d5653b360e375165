"""docs/python-api.md: its Python blocks run, in order, in one namespace (scripted model, temp home)."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "python-api.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


def test_the_python_api_page_runs(capsys):
    blocks = python_blocks()
    assert len(blocks) >= 6
    namespace: dict = {"__name__": "python_api_doc"}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102 - our own documentation
    out = capsys.readouterr().out
    assert "17% of 2,340 is 397.8." in out and "['model', 'tool', 'model', 'finalize']" in out
    assert "router.md" in out and "retrieve" in out and "\n1 0\n" in out and "Quartz is a 7." in out
    assert namespace["result"]["messages"][-1].content == "Quartz is a 7."
