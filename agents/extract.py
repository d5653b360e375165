"""Extract one JSON object per document (or per chunk) with a chat model, validated by a JSON Schema.

``check_schema(schema)`` refuses a schema that is not JSON Schema (jsonschema's own
``check_schema``) before any model work. ``extract_rows(chat_model, schema, docs, options,
on_row)`` asks the model for one JSON object per file, or per chunk (retrieval's Chunker,
sized in the model's tokens so each prompt fits its window); an answer that is not JSON or
fails validation goes back to the model with the error, up to ``retries`` times; an answer
still invalid is recorded as a row with its error and the raw text, never dropped. Every row
carries the source path and the spans (character start/end, page) it came from, and is handed
to ``on_row`` as soon as it is made. Where the backend can constrain decoding (``constrains``), the
answer is decoded constrained to the schema (``constrained`` option, on by default; rows say
whether they were). Knows chat models, JSON Schema and chunks; nothing of
files on disk, Settings or the CLI.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from feldspar.agents.errors import AgentError
from feldspar.agents.summarize import CHARS_PER_TOKEN_BOUND, SourceText, split_for_budget
from feldspar.model.structure import Structure

SYSTEM = ("You extract structured data from documents. Reply with one JSON object and nothing else; it must "
          "validate against this JSON Schema:\n{schema}")
REQUEST = "Extract the data from the document {title!r} ({where}).\n\n{text}"
RETRY = ("That answer is invalid: {error}\nReply with only a corrected JSON object that validates against the "
         "schema.")
FENCE = re.compile(r"^```[a-zA-Z]*\s*\n(.*?)\n?```\s*$", re.DOTALL)


class SchemaInvalid(AgentError):
    """The schema file is not a JSON Schema."""


@dataclass
class ExtractOptions:
    retries: int = 2
    per_chunk: bool = False
    max_new_tokens: int = 512
    constrained: bool = True  # decode constrained to the schema where the backend can (else validate and retry)


def check_schema(schema: Any, name: str = "schema") -> Any:
    """The validator class for ``schema``; a schema that is not JSON Schema raises ``SchemaInvalid``."""
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import validator_for

    if not isinstance(schema, (dict, bool)):
        raise SchemaInvalid(f"{name} is not a JSON Schema: it is a JSON {type(schema).__name__}, not an object")
    cls = validator_for(schema)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "(top level)"
        raise SchemaInvalid(f"{name} is not a valid JSON Schema: {exc.message} at {where}") from None
    return cls


def parse_answer(raw: str, validator) -> tuple[Any, str | None]:
    """(object, None) for a valid answer; (None or the object, error text) otherwise."""
    text = raw.strip()
    fenced = FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        start, end = text.find("{"), text.rfind("}")
        try:
            value = json.loads(text[start:end + 1]) if 0 <= start < end else None
        except json.JSONDecodeError:
            value = None
        if value is None:
            return None, f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    from jsonschema.exceptions import best_match

    error = best_match(validator.iter_errors(value))
    if error is None:
        return value, None
    where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
    return value, f"fails the schema at {where}: {error.message}"


class Extractor:
    def __init__(self, chat_model, schema: Any, options: ExtractOptions) -> None:
        self.model, self.options = chat_model, options
        self.validator = check_schema(schema)(schema)
        self.system = SYSTEM.format(schema=json.dumps(schema, ensure_ascii=False, indent=1))
        self.backend = chat_model.backend
        self.constrained = options.constrained and bool(getattr(self.backend, "constrains", False))
        self.call_options = {"structure": Structure.json_schema(schema)} if self.constrained else {}
        self.prompt_limit = int(self.backend.context_window) - options.max_new_tokens
        self.calls = 0

    def messages(self, doc: SourceText, where: str, text: str) -> list[BaseMessage]:
        title = doc.title or doc.path
        return [SystemMessage(self.system), HumanMessage(REQUEST.format(title=title, where=where, text=text))]

    def pieces(self, doc: SourceText) -> list[tuple[int | None, str, dict[str, Any]]]:
        """(chunk index or None, text, span) for each request this document makes."""
        if not self.options.per_chunk:
            return [(None, doc.text, doc.span(0, len(doc.text)))]
        chunks = split_for_budget(self.model, doc, lambda text: self.messages(doc, "chars 0-0, page 0", text),
                                  limit=self.chunk_limit())
        return [(chunk.index, chunk.text, doc.span(chunk.start, chunk.end)) for chunk in chunks]

    def chunk_limit(self) -> int:
        """Prompt tokens for a chunk: room kept for one retry (answer + error) where the window allows."""
        retry_room = (self.options.max_new_tokens + 96) if self.options.retries else 0
        return self.prompt_limit - retry_room if retry_room <= self.prompt_limit // 2 else self.prompt_limit

    def row(self, doc: SourceText, chunk: int | None, text: str, span: dict[str, Any]) -> dict[str, Any]:
        where = f"chars {span['start']}-{span['end']}" + (f", page {span['page']}" if span.get("page") else "")
        base = {"path": doc.path, "chunk": chunk, "spans": [span], "sha256": doc.content_hash,
                "model": self.backend.name, "random_weights": bool(getattr(self.backend, "random_weights", False)),
                "constrained": self.constrained}
        messages = self.messages(doc, where, text)
        too_long = len(text) // CHARS_PER_TOKEN_BOUND > self.prompt_limit
        tokens = None if too_long else len(self.model.prompt_token_ids(messages))
        if too_long or tokens > self.prompt_limit:
            size = f"{len(text):,} characters" if too_long else f"{tokens:,} tokens"
            return {**base, "ok": False, "data": None, "attempts": 0, "raw": None,
                    "error": f"the prompt is {size}, over the {self.prompt_limit:,} tokens the window leaves; "
                             f"extract per chunk instead"}
        raw, error, value = "", None, None
        for attempt in range(1, self.options.retries + 2):
            if attempt > 1:
                messages = [*messages, AIMessage(raw), HumanMessage(RETRY.format(error=error))]
                if len(self.model.prompt_token_ids(messages)) > self.prompt_limit:
                    return {**base, "ok": False, "data": value, "attempts": attempt - 1, "raw": raw,
                            "error": f"{error} (no room in the window for another attempt)"}
            raw = str(self.model.invoke(messages, max_new_tokens=self.options.max_new_tokens, **self.call_options).content)
            self.calls += 1
            value, error = parse_answer(raw, self.validator)
            if error is None:
                return {**base, "ok": True, "data": value, "attempts": attempt, "error": None}
        return {**base, "ok": False, "data": value, "attempts": self.options.retries + 1, "raw": raw, "error": error}


def extract_rows(chat_model, schema: Any, docs: Iterable[SourceText], options: ExtractOptions | None = None,
                 on_row: Callable[[dict[str, Any]], None] | None = None,
                 skip: Callable[[SourceText, int | None, dict[str, Any]], bool] | None = None,
                 progress: Callable[[str, int, int | None], None] | None = None) -> dict[str, Any]:
    """Rows for every document (or chunk); ``skip(doc, chunk, span)`` leaves out rows done before."""
    options = options or ExtractOptions()
    if options.retries < 0:
        raise AgentError("retries must be 0 or more")
    extractor = Extractor(chat_model, schema, options)
    docs = list(docs)
    counts = {"rows": 0, "valid": 0, "invalid": 0, "skipped_done": 0}
    for number, doc in enumerate(docs):
        if progress:
            progress("extract", number, len(docs))
        for chunk, text, span in extractor.pieces(doc):
            if skip is not None and skip(doc, chunk, span):
                counts["skipped_done"] += 1
                continue
            row = extractor.row(doc, chunk, text, span)
            counts["rows"] += 1
            counts["valid" if row["ok"] else "invalid"] += 1
            if on_row:
                on_row(row)
    if progress:
        progress("extract", len(docs), len(docs))
    return {**counts, "files": len(docs), "model_calls": extractor.calls, "model": extractor.backend.name,
            "constrained": extractor.constrained,
            "random_weights": bool(getattr(extractor.backend, "random_weights", False))}
