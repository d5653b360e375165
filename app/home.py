"""Check that the data home (or a folder under it) can be written, before any expensive work.

A home on a read-only filesystem, one that is a file, one under a file or one without
permission fails here as one ``HomeNotWritable`` line naming the path and the fix, instead of
a SQLite, Chroma or pack-writing traceback after minutes of work. The check really writes
(creates and removes a temporary file): permission bits alone do not tell, e.g. for root on
a read-only mount. Knows paths; nothing of what is stored there.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from feldspar.settings import SettingsError


class HomeNotWritable(SettingsError):
    """The data home (or a folder in it) cannot be created or written; ``fix`` is the remedy key
    app/errors.py words for each front end ("home": choose another data home)."""

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.fix = fix
        self.details: dict[str, object] = {}


def require_writable(folder: Path, what: str = "data home", fix: str | None = None) -> Path:
    """Create ``folder`` if needed and prove a file can be written in it; return it.
    ``fix``: the advice that ends the message (default: none; the error's remedy key says how to
    choose another data home, each front end in its own words)."""
    key = None if fix else "home"
    end = f"; {fix}" if fix else ""
    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".feldspar-write-check-", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except FileExistsError:
        raise HomeNotWritable(f"the {what} {folder} is a file, not a directory{end}", key) from None
    except NotADirectoryError:
        raise HomeNotWritable(f"the {what} {folder} is inside a file, not a directory{end}", key) from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise HomeNotWritable(f"the {what} {folder} is not writable ({reason.lower()}){end}", key) from None
    return folder

