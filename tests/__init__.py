"""Feldspar's test suite, a package: helpers are imported by their full name, never via sys.path.

A test imports a shared helper as ``from tests.<folder>.<module> import <name>``, e.g.
``from tests.app.cli_runner import run_cli``; pyproject's ``pythonpath = ["."]`` puts the
repository root on sys.path for pytest, and a child process a test starts imports them too
when it runs with the repository root as its working directory (or on PYTHONPATH).
See tests/README.md for the helpers and the fixtures every folder shares.
"""
