"""How loud the libraries under Feldspar are: quiet by default, everything with --verbose.

transformers and huggingface_hub draw progress bars ("Loading weights", "Writing model
shards") and log warnings (e.g. "indexing errors" for long token sequences); pypdf logs
its repairs of damaged files; sentence-transformers and Chroma log their own chatter.
Feldspar shows its own progress and reports problems as one line, so these stay hidden
unless a command runs with ``--verbose``. A value the user set in the environment wins.
Knows environment variables and logger names; nothing of what the libraries do.
"""

from __future__ import annotations

import logging
import os
import sys

QUIET_ENV = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error",
             "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}
LIBRARY_LOGGERS = ("transformers", "huggingface_hub", "sentence_transformers", "pypdf", "chromadb", "httpx", "bm25s")
_set_by_us: set[str] = set()


def quiet_libraries(verbose: bool = False) -> None:
    """Hide library progress bars and warnings, or (``verbose``) show them again."""
    for key, value in QUIET_ENV.items():
        if not verbose and key not in os.environ:
            os.environ[key] = value
            _set_by_us.add(key)
        elif verbose and key in _set_by_us:
            os.environ.pop(key, None)
            _set_by_us.discard(key)
    level = logging.NOTSET if verbose else logging.ERROR
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(level)
    if "transformers" in sys.modules:  # already imported: its own switches, not just the environment
        _transformers_switches(verbose)


def _transformers_switches(verbose: bool) -> None:
    from transformers.utils import logging as transformers_logging

    if verbose:
        transformers_logging.set_verbosity_warning()
        transformers_logging.enable_progress_bar()
    else:
        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()
