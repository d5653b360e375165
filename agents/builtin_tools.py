"""The built-in tools: search_documents, read_document, calculator and current_time.

Each factory returns a ``FeldsparTool`` around plain callables that the composition root
passes in (the retrieval service's search and read_span), so this module imports no
retrieval code and knows nothing of collections, stores or settings. ``search_documents``
is defined here once: the graph offers the model this tool's schema and numbers its
passages with the same ``doc_id``s the model cites (agents/citations.py).
``read_document`` serves at most ``MAX_READ_CHARS`` per call and says where to continue.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from langchain_core.tools import ToolException
from pydantic import BaseModel, Field, model_validator

from feldspar.agents.calculator import MAX_CHARS, CalculatorError, evaluate
from feldspar.agents.citations import number_passages
from feldspar.agents.tools import FeldsparTool

MAX_READ_CHARS = 4000

SearchFn = Callable[[str, int], list[dict[str, Any]]]
ReadSpanFn = Callable[[str, "int | None", "int | None"], dict[str, Any]]


# ---- search_documents ------------------------------------------------------------------
SEARCH_DOCUMENTS = "search_documents"
SEARCH_PARAMETERS = {"type": "object", "properties": {"query": {"type": "string", "description": "what to look for"}},
                     "required": ["query"]}


def search_documents_tool(search: SearchFn, k: int = 4) -> FeldsparTool:
    """The one definition of ``search_documents``: the schema the agent offers the model and a run of it.

    ``search(query, k)`` returns hit dicts (path, page, start, end, heading, score, text, chunk_id).
    Run alone (``feldspar tools run``) it returns the passages as a new thread would number them;
    inside the agent the graph runs the same search and numbering across the thread's turns
    (``Nodes.search``, citations.number_passages) and shows the model ``passages_for_model``.
    """
    def search_documents(query: str) -> dict[str, Any]:
        passages = list(number_passages(search(query, k), first_id=1).values())
        found: dict[str, Any] = {"query": query, "passages": passages}
        if not passages:
            found["note"] = "no passages matched; try other words"
        return found

    return FeldsparTool(name=SEARCH_DOCUMENTS, args_schema=SEARCH_PARAMETERS, func=search_documents, source="builtin",
                        description="Search the user's documents; returns passages with a doc_id to cite.")


# ---- read_document ---------------------------------------------------------------------
class ReadArgs(BaseModel):
    path: str = Field(min_length=1, max_length=1000, description="a file path as given by search_documents")
    start: int | None = Field(None, ge=0, description="first character to read (default 0)")
    end: int | None = Field(None, ge=0, description="character after the last one to read")

    @model_validator(mode="after")
    def _ordered(self) -> "ReadArgs":
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError("end must be greater than start")
        return self


def read_document_tool(read_span: ReadSpanFn) -> FeldsparTool:
    """``read_span(path, start, end)`` returns the text span of a file of the collection, or raises."""
    def read_document(path: str, start: int | None = None, end: int | None = None) -> dict[str, Any]:
        first = start or 0
        last = first + MAX_READ_CHARS if end is None else min(end, first + MAX_READ_CHARS)
        span = dict(read_span(path, first, last))
        total = span.get("total_chars")
        if isinstance(total, int) and span.get("end", total) < total:
            span["next_start"] = span["end"]
        return span

    return FeldsparTool(
        name="read_document",
        description=(f"Read a span of a file of the document collection by character offsets (at most "
                     f"{MAX_READ_CHARS} characters per call). Only files of the collection can be read."),
        args_schema=ReadArgs, func=read_document, source="builtin")


# ---- calculator ------------------------------------------------------------------------
class CalculatorArgs(BaseModel):
    expression: str = Field(min_length=1, max_length=MAX_CHARS,
                            description="arithmetic such as (2 + 3) * 4 / 7 or sqrt(2) ** 3")


def calculator_tool() -> FeldsparTool:
    def calculator(expression: str) -> int | float:
        try:
            return evaluate(expression)
        except CalculatorError as exc:
            raise ToolException(str(exc)) from None

    return FeldsparTool(
        name="calculator",
        description=("Evaluate arithmetic: numbers, + - * / // % **, parentheses, pi, e and math functions "
                     "(sqrt, log, exp, sin, cos, round, min, max …)."),
        args_schema=CalculatorArgs, func=calculator, source="builtin")


# ---- current_time ----------------------------------------------------------------------
class TimeArgs(BaseModel):
    tz: str | None = Field(None, max_length=64,
                           description="IANA time zone such as Europe/Paris or UTC (default: the local zone)")


def current_time_tool(clock: Callable[[], datetime] | None = None) -> FeldsparTool:
    """``clock`` returns an aware UTC datetime (tests pass a fixed one); default: now."""
    now = clock or (lambda: datetime.now(timezone.utc))

    def current_time(tz: str | None = None) -> dict[str, str]:
        moment = now().astimezone(_zone(tz)) if tz else now().astimezone()
        return {"time": moment.isoformat(timespec="seconds"), "timezone": tz or str(moment.tzname()),
                "weekday": moment.strftime("%A")}

    return FeldsparTool(name="current_time", description="The current date and time, optionally in a time zone.",
                        args_schema=TimeArgs, func=current_time, source="builtin")


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ToolException(f"unknown time zone {name[:64]!r}; use an IANA name such as Europe/Paris or UTC") from None
