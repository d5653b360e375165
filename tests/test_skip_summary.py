"""A run that skipped tests ends with one line naming them and the install command."""

from __future__ import annotations

pytest_plugins = ["pytester"]

SUITE = '''
import pytest

def test_runs():
    pass

def test_needs_postgres():
    pytest.skip("PostgreSQL server binaries not found (Debian's postgresql package)")

def test_needs_chromium():
    pytest.skip("Chromium is not installed (apt-get install chromium)")
'''


def test_the_last_line_names_skipped_tests_and_the_install_command(pytester):
    pytester.makeconftest("from tests.skip_summary import pytest_terminal_summary")
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest("-q", "-p", "no:cacheprovider")
    last = [line for line in result.outlines if line.strip()][-2]  # just above pytest's own counts
    assert "skipped 2 test(s)" in last and "test_needs_postgres" in last and "test_needs_chromium" in last, last
    assert "apt-get install -y postgresql chromium" in last, last


def test_nothing_skipped_adds_no_line(pytester):
    pytester.makeconftest("from tests.skip_summary import pytest_terminal_summary")
    pytester.makepyfile(test_suite="def test_runs():\n    pass\n")
    result = pytester.runpytest("-q", "-p", "no:cacheprovider")
    assert not any("skipped" in line for line in result.outlines)
