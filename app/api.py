"""The Python API: ``feldspar.Feldspar``, one object for everything the CLI and the UI do.

    from feldspar import Feldspar
    fs = Feldspar(home="~/feldspar", collection="manuals")    # Settings + keyword overrides
    fs.ingest("~/manuals")
    answer = fs.ask("How do I reset the router?")              # Answer: text, sources, trace, usage …
    for event in fs.stream("And the modem?", thread=answer.thread_id):
        ...                                                     # AgentEvent: token, retrieve, tool …
    fs.batch("questions.jsonl", out="answers.jsonl")           # the same runner as `feldspar batch`
    fs.graph, fs.chat_model                                    # the compiled LangGraph graph, ChatGranite

Everything is built by the Runtime that app/compose.py makes from one Settings, on first use
(app/runtime.py, the same object the CLI, the server and the UI hold): the engine is loaded
when the first question needs it, the retrieval service when the first search or ingest
does. ``Feldspar(chat_model=...)`` runs on any ChatGranite (the scripted one in tests and
examples) without loading a checkpoint. Knows the composition root and the agent's answer
dicts; nothing of how generation, retrieval or the graph work inside.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

from feldspar.settings import Settings, load_settings

if TYPE_CHECKING:  # pragma: no cover
    from feldspar.agents.runner import AgentEvent


@dataclass
class Answer:
    """One answer: its text, cited sources, the turn's trace and token usage, and its thread."""

    text: str
    sources: list[dict[str, Any]] = field(default_factory=list)
    trace: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, Any] = field(default_factory=dict)
    thread_id: str = ""
    stop_reason: str | None = None
    random_weights: bool = False
    unknown_citations: list[str] = field(default_factory=list)
    pending_approval: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, answer: dict[str, Any], random_weights: bool) -> "Answer":
        return cls(text=answer.get("text", ""), sources=list(answer.get("sources") or []),
                   trace=list(answer.get("trace") or []), usage=dict(answer.get("usage") or {}),
                   thread_id=answer.get("thread_id", ""), stop_reason=answer.get("stop_reason"),
                   random_weights=random_weights, unknown_citations=list(answer.get("unknown_citations") or []),
                   pending_approval=answer.get("pending_approval"))

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))

    def __str__(self) -> str:
        return self.text


@dataclass
class BatchResult:
    """What ``Feldspar.batch`` did: the new answer records, the summary and the unusable questions."""

    records: list[dict[str, Any]]
    summary: Any
    bad_lines: list[Any]


def _refuse(_request: dict[str, Any]) -> bool:
    return False


class Feldspar:
    """Feldspar from one Settings: ask, stream, batch, ingest, search, summarize, extract."""

    def __init__(self, settings: Settings | None = None, *, chat_model: Any = None, policy: str | None = None,
                 approve: str | None = None, tools_module: str | Path | None = None, **overrides: Any) -> None:
        """``overrides`` are Settings fields (``home``, ``model``, ``collection`` …) checked like the CLI's;
        ``chat_model`` replaces the local engine (a ChatGranite over any backend);
        ``policy`` / ``approve`` / ``tools_module`` configure the agent as `feldspar ask` flags do;
        ``approve=None`` (the default): a side-effecting call is put to the ``approve`` callback of
        ``ask`` and refused when none is given (``"never"``/``"always"`` decide without asking)."""
        if settings is None:
            self.settings = load_settings(**overrides)
        else:
            self.settings = load_settings(**{**settings.model_dump(), **overrides}) if overrides else settings
        self._chat_model = chat_model
        self._asks = approve in (None, "ask")
        self._agent_options = {"policy": policy, "approve": "ask" if self._asks else approve,
                               "tools_module": tools_module}
        self._runtime = None

    # ---- the parts, built on first use ------------------------------------------------------
    @property
    def runtime(self):
        """The Runtime (app/runtime.py) this object holds: the engine, chat model, retrieval and agents."""
        if self._runtime is None:
            from feldspar.compose import build_runtime

            self._runtime = build_runtime(self.settings, chat_model=self._chat_model)
        return self._runtime

    @property
    def agents(self):
        """``agents(collection, pack)``: the agent for that collection or pack (the runtime's, built once)."""
        return self.runtime.agents(**self._agent_options)

    @property
    def engine(self):
        """The local Granite engine (loaded now if it was not yet)."""
        return self.runtime.engine()

    @property
    def chat_model(self):
        """The langchain chat model (ChatGranite) the agent uses; bind tools to it for your own graphs."""
        return self.runtime.chat_model()

    @property
    def agent(self):
        """The agent (feldspar.agents.runner.Agent) for the default collection."""
        return self.agents(None, None)

    @property
    def graph(self):
        """The agent's compiled LangGraph graph."""
        return self.agent.graph

    @property
    def retrieval(self):
        """The retrieval service (ingest, search, sources) of the data home."""
        return self.runtime.retrieval()

    # ---- questions --------------------------------------------------------------------------
    def ask(self, question: str, thread: str | None = None, collection: str | None = None, pack: str | None = None,
            approve: Callable[[dict[str, Any]], bool] | None = None,
            on_event: Callable[["AgentEvent"], None] | None = None) -> Answer:
        """Answer one question (continuing ``thread`` if given); ``approve`` decides side-effecting tools."""
        agent = self.agents(collection, pack)
        if approve is None and self._asks:
            approve = _refuse  # nobody to ask: a side-effecting call is refused, as with "never"
        answer = agent.ask(question, thread, approve=approve, on_event=on_event)
        return Answer.from_dict(answer, _random_weights(agent))

    def stream(self, question: str, thread: str | None = None, collection: str | None = None,
               pack: str | None = None) -> Iterator["AgentEvent"]:
        """The question's events as they happen: one per step (begin, retrieve, compact, model, approve, tool,
        finalize: agents/steps.py, the names the graph and the trace use), token, approval_request and answer."""
        return self.agents(collection, pack).stream(question, thread)

    def batch(self, questions: str | Path | Iterable[Any], out: str | Path | None = None, *, workers: int = 1,
              on_record: Callable[[dict[str, Any]], None] | None = None) -> BatchResult:
        """Answer many questions: a JSONL path, or strings / dicts like its lines. With ``out`` the answers
        are appended there as `feldspar batch` does (ids already in it are skipped). ``workers`` is capped at
        what the backend serves at once (``max_concurrency``; 1 for the local engine)."""
        from feldspar.agents.batch import AnswerLog, items_from, read_questions, run_batch

        if isinstance(questions, (str, Path)):
            items, bad = read_questions(Path(questions).expanduser())
        else:
            items, bad = items_from(questions)
        log = AnswerLog(Path(out).expanduser()) if out is not None else None
        workers = 1 if workers <= 1 else min(workers, self.agents.max_workers())
        try:
            records, summary = run_batch(
                items, self.agents, log.append if log else (lambda record: None), done=log.done if log else None,
                previous=log.records if log else (), workers=workers, on_record=on_record,
                describe_error=_describe_error, approve=_refuse if self._asks else None)
        finally:
            if log is not None:
                log.close()
        summary.bad_lines = len(bad)
        return BatchResult(records, summary, bad)

    # ---- documents --------------------------------------------------------------------------
    def ingest(self, folder: str | Path, collection: str | None = None, progress: Any = None):
        """Index a folder (or file) into ``collection`` (default: the settings' one); returns the IngestSummary."""
        from feldspar.home import require_writable

        require_writable(self.settings.home)
        return self.retrieval.ingest([Path(folder).expanduser()], collection=collection, progress=progress)

    def search(self, query: str, k: int = 5, collection: str | None = None) -> list[dict[str, Any]]:
        """Hybrid search with citations: hits as dicts (path, page, start, end, heading, score, text …)."""
        return [hit.to_dict() for hit in self.retrieval.search(query, k, collection=collection)]

    # ---- workflows (feldspar.workflows) ---------------------------------------------------------
    def summarize(self, *args: Any, **kwargs: Any):
        """Map-reduce summary of files or a collection: see ``feldspar.workflows.summarize``."""
        from feldspar.workflows import summarize

        kwargs.setdefault("chat_model", self.chat_model)  # the engine (or server) this object already uses
        return summarize(self.settings, *args, **kwargs)

    def generate(self, prompt: str, *, schema: dict[str, Any] | None = None, regex: str | None = None,
                 choice: Sequence[str] | None = None, **options: Any) -> dict[str, Any]:
        """One chat turn, constrained to a JSON Schema (``data`` is the parsed object), a regex or a choice.

        ``options`` are ChatGranite call options (``max_new_tokens``, ``temperature``, ``seed`` …)."""
        from feldspar.model.structure import Structure

        given = [s for s in (Structure.json_schema(schema) if schema is not None else None,
                             Structure.regex(regex) if regex is not None else None,
                             Structure.choice(choice) if choice is not None else None) if s is not None]
        if len(given) > 1:
            raise ValueError("give one of schema=, regex=, choice=, not several")
        message = self.chat_model.invoke(prompt, **({"structure": given[0]} if given else {}), **options)
        text, meta = str(message.content), message.response_metadata
        errors = given[0].validate(text) if given else []
        return {"text": text, "data": json.loads(text) if schema is not None and not errors else None,
                "valid": not errors, "errors": errors, "finish_reason": meta.get("finish_reason"),
                "random_weights": bool(meta.get("random_weights"))}

    def extract(self, *args: Any, **kwargs: Any):
        """Schema-validated extraction from files, constrained decoding by default: see ``feldspar.workflows.extract``."""
        from feldspar.workflows import extract

        kwargs.setdefault("chat_model", self.chat_model)
        return extract(self.settings, *args, **kwargs)

    def close(self) -> None:
        if self._runtime is not None:
            self._runtime.close()

    def __enter__(self) -> "Feldspar":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _describe_error(exc: BaseException) -> str:
    """A failed question's error as the CLI words it (a user error with its remedy, else type: message)."""
    from feldspar.errors import user_error_types, user_message

    return user_message(exc) if isinstance(exc, user_error_types()) else f"{type(exc).__name__}: {exc}"


def _random_weights(agent: Any) -> bool:
    return bool(getattr(agent.deps.chat_model.backend, "random_weights", False))
