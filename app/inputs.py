"""Reading user inputs for CLI commands: text files, JSON files of messages/tools/documents.

Tools, documents and messages are checked against JSON schemas (``jsonschema``) as they are
read, so a tool with no name, a document with no text or a message with no content is
refused before any model loads. Every failure is a one-line ``PromptError`` naming the
file and the item; nothing here knows models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from feldspar.model.errors import PromptError
from feldspar.model.text_checks import first_surrogate


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


_TEXT = {"type": "string", "minLength": 1}
_FUNCTION = {"type": "object", "required": ["name"],
             "properties": {"name": _TEXT, "description": {"type": "string"}, "parameters": {"type": "object"}}}
SCHEMAS: dict[str, dict[str, Any]] = {
    # An OpenAI function schema ({"type": "function", "function": {...}}) or a bare function.
    "tools": {"if": {"required": ["function"]},
              "then": {"properties": {"type": {"const": "function"}, "function": _FUNCTION}},
              "else": _FUNCTION},
    "documents": {"type": "object", "required": ["text"],
                  "properties": {"text": _TEXT, "title": {"type": "string"}, "doc_id": {"type": ["integer", "string"]}}},
    # Every message has a role and text content; an assistant turn that calls tools may have none.
    "messages": {"type": "object", "required": ["role"],
                 "properties": {"role": {"enum": ["system", "user", "assistant", "tool"]},
                                "content": {"type": ["string", "null"]}, "tool_calls": {"type": "array"}},
                 "if": {"properties": {"role": {"const": "assistant"}}, "required": ["role", "tool_calls"]},
                 "else": {"required": ["role", "content"], "properties": {"content": {"type": "string"}}}},
}


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
    hit = first_surrogate(data)
    if hit is not None:
        raise PromptError(f"{what} file {path}: item {int(hit[0].split('.')[0]) + 1} holds an unpaired surrogate "
                          f"(U+{ord(hit[2]):04X}, at {hit[0] or 'top level'}), which is not valid Unicode text")
    check_items(data, what, f"{what} file {path}")
    return data


def check_items(items: list[dict[str, Any]], what: str, where: str) -> None:
    """Refuse the first item that does not match the schema of ``what`` (tools, documents, messages)."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    if not items and what != "documents":
        raise PromptError(f"{where} holds no {what}")
    validator = Draft202012Validator(SCHEMAS[what])
    for number, item in enumerate(items, start=1):
        error = best_match(validator.iter_errors(item))
        if error is not None:
            field = ".".join(str(p) for p in error.absolute_path)
            raise PromptError(f"{where}: item {number}{f' ({field})' if field else ''}: {_wording(error)}")


def _wording(error: Any) -> str:
    if error.validator == "minLength":
        return "must not be empty"
    if error.validator == "required":
        return error.message.replace("is a required property", "is missing")
    return error.message


def documents_from_files(paths: list[Path]) -> list[dict[str, Any]]:
    """Granite documents from plain text files: one document each, titled by file name."""
    return [
        {"doc_id": i, "title": p.name, "text": read_text_file(p, "document"), "source": str(p)}
        for i, p in enumerate(paths, start=1)
    ]
