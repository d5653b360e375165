"""Reading user inputs for CLI commands: text files, JSON files of messages/tools/documents.

Every failure is a one-line ``PromptError`` naming the file; nothing here knows models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from feldspar.model.errors import PromptError


def read_text_file(path: Path, what: str = "input") -> str:
    try:
        data = path.expanduser().read_bytes()
    except FileNotFoundError:
        raise PromptError(f"{what} file not found: {path}") from None
    except IsADirectoryError:
        raise PromptError(f"{what} path is a directory, not a file: {path}") from None
    except OSError as exc:
        raise PromptError(f"cannot read {what} file {path}: {exc.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PromptError(
            f"{what} file {path} is not UTF-8 text (invalid byte at offset {exc.start}); convert it to UTF-8 first"
        ) from None


def read_json_list(path: Path | None, what: str) -> list[dict[str, Any]] | None:
    """A JSON list of objects (tools, documents or messages), or None when no path."""
    if path is None:
        return None
    text = read_text_file(path, what)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PromptError(f"{what} file {path} is not valid JSON: {exc.msg} (line {exc.lineno})") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise PromptError(f"{what} file {path} must hold a JSON object or a list of objects")
    return data


def documents_from_files(paths: list[Path]) -> list[dict[str, Any]]:
    """Granite documents from plain text files: one document each, titled by file name."""
    return [
        {"doc_id": i, "title": p.name, "text": read_text_file(p, "document"), "source": str(p)}
        for i, p in enumerate(paths, start=1)
    ]
