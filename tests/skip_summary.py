"""The last line of a test run names what was skipped and the command that installs what it needs.

``make test`` on a fresh machine runs the whole suite where Debian's postgresql and chromium
are installed (``.ci/run`` installs both); elsewhere their tests skip, and this line says so
instead of a green run that quietly left them out. Used by tests/conftest.py.
"""

from __future__ import annotations

from typing import Any

NEEDS = (("postgresql", "postgresql"), ("chromium", "chromium"))  # (word in the skip reason, Debian package)


def skipped_line(skipped: list[Any]) -> str | None:
    """One line for the skipped reports (pytest ``TestReport``s), or None when nothing was skipped."""
    if not skipped:
        return None
    names = sorted({report.nodeid.split("[")[0] for report in skipped})
    reasons = " ".join(str(report.longrepr).lower() for report in skipped)
    packages = [package for word, package in NEEDS if word in reasons]
    shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    fix = (f"install what they need: sudo apt-get install -y {' '.join(packages)} (or run bash .ci/run)"
           if packages else "see the reasons with pytest -rs")
    return f"skipped {len(skipped)} test(s) ({shown}); {fix}"


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    line = skipped_line(terminalreporter.stats.get("skipped", []))
    if line:
        terminalreporter.write_line(line, yellow=True)
