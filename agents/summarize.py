"""Summarise documents with a chat model: map-reduce over files and chunks, or one long-context call.

``summarize_documents(chat_model, docs, options, cache)`` takes a langchain chat model
(ChatGranite over any backend) and plain ``SourceText`` documents and returns a report:

- **long-context** (``mode="auto"`` when every document fits ``long_context_share`` of the
  window with room for the answer, or ``mode="long-context"``): one call, the documents in
  Granite's ``documents`` slot (the shape of a state pack's documents, so a pack made from
  them is resumed, see ``prepare_long_context``) and no system prompt of ours, so the
  prompt's system turn is the pack's;
- **map-reduce**: one summary per file, over its chunks when the file does not fit one call
  (retrieval's Chunker, sized in the model's own tokens, so each chunk keeps its character
  span and page); then a reduce over the file summaries, hierarchical when they do not fit
  one prompt: groups that fit are merged (citation markers kept) until the rest fits.

Every budget is the backend's real ``context_window`` and every count the model's exact
``prompt_token_ids``. File summaries are cached by content hash (``SummaryCache``: a folder
of JSON files) with the model name and the prompt version in the key, so a re-run only
recomputes changed files. Answers cite files as ``[n]``; cited numbers are mapped back to
paths, spans and pages, unknown ones dropped and listed. Knows chat models, chunking and
JSON files; nothing of Settings, the CLI, engines or packs.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from feldspar.agents.citations import cited_ids, strip_unknown
from feldspar.agents.configuration import SUMMARY_MODES, SummaryMode
from feldspar.agents.errors import AgentError
from feldspar.retrieval.chunking import Chunker
from feldspar.retrieval.loaders import Extracted

PROMPT_VERSION = "summarize-1"
CHARS_PER_TOKEN_BOUND = 8  # no tokenizer packs more characters than this into a token of real text
MAP_SYSTEM = "You summarise documents accurately and concisely. Use only what the text says."
MAP_FILE = "Summarise the document {title!r} below in a few sentences.{focus}\n\n{text}"
MAP_PART = ("Summarise part {part} of {parts} of the document {title!r} ({where}) in a few sentences.{focus}"
            "\n\n{text}")
MERGE_PARTS = ("Below are summaries of consecutive parts of the document {title!r}. Write one summary of the "
               "whole document.{focus}\n\n{items}")
FINAL = ("Below are summaries of {count} files, each introduced by its number in brackets. Write a summary of "
         "all of them.{focus} Cite the files each statement comes from as [n].\n\n{items}")
GROUP = ("Below are summaries of files, each introduced by its number in brackets. Merge them into one shorter "
         "summary.{focus} Keep the citation [n] of every file each statement comes from.\n\n{items}")
LONG = ("Summarise the documents you were given.{focus} Cite the documents each statement comes from by their "
        "doc_id as [n].")
Progress = Callable[[str, int, "int | None"], None]  # (stage, done, total or None)


@dataclass
class SourceText:
    """One readable file: what to show (``path``), its text and where pages start and end."""

    path: str
    text: str
    title: str = ""
    source: str = ""  # the real path, as a state pack records it
    pages: list[tuple[int, int, int]] = field(default_factory=list)  # (page, start, end) spans into text
    markup: str | None = None

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(f"{self.title}\0{self.text}".encode("utf-8", "surrogatepass")).hexdigest()

    def span(self, start: int, end: int) -> dict[str, Any]:
        pages = [page for page, first, last in self.pages if first < end and last > start]
        return {"start": start, "end": end, "page": pages[0] if pages else None,
                **({"pages": [pages[0], pages[-1]]} if len(pages) > 1 else {})}

    def as_document(self, doc_id: int) -> dict[str, Any]:
        """The Granite document a state pack of this file holds (same keys, same order)."""
        return {"doc_id": doc_id, "title": self.title or os.path.basename(self.path), "text": self.text,
                "source": self.source or self.path}


@dataclass
class SummaryOptions:
    summary_tokens: int = 512  # new tokens per summary call
    mode: SummaryMode = "auto"
    long_context_share: float = 0.75  # auto: one call when the documents fit this share of the window
    focus: str | None = None  # what the summary should be about, added to every request
    margin_tokens: int = 16  # slack between a chunk's own token count and its count inside the prompt


class SummaryCache:
    """Summaries by key in a folder of small JSON files (written atomically); ``None`` folder: no cache."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = Path(directory) if directory is not None else None

    def get(self, key: str) -> dict[str, Any] | None:
        if self.directory is None:
            return None
        try:
            return json.loads((self.directory / f"{key}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def put(self, key: str, value: dict[str, Any]) -> None:
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".json")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(value, out, ensure_ascii=False)
        os.replace(temp, self.directory / f"{key}.json")


@dataclass
class Item:
    """A piece of text going into a merge prompt: a file or part summary, or a merged group."""

    ids: list[int]
    label: str
    text: str


class Summarizer:
    """One summarisation run: the model, its budget, the cache and the counters of the report."""

    def __init__(self, chat_model, options: SummaryOptions, cache: SummaryCache | None = None,
                 progress: Progress | None = None) -> None:
        self.model, self.options = chat_model, options
        self.cache = cache or SummaryCache(None)
        self.progress = progress or (lambda stage, done, total: None)
        self.backend = chat_model.backend
        self.window = int(self.backend.context_window)
        self.prompt_limit = self.window - options.summary_tokens
        self.focus = f" Focus on: {options.focus}." if options.focus else ""
        self.calls = self.prompt_tokens = self.reused_tokens = self.reduce_levels = self.reduce_calls = 0

    # ---- the model -------------------------------------------------------------------------
    def count(self, messages: Sequence[BaseMessage], documents: list[dict] | None = None) -> int:
        return len(self.model.prompt_token_ids(list(messages), documents=documents))

    def fits(self, messages: Sequence[BaseMessage]) -> bool:
        return self.count(messages) <= self.prompt_limit

    def call(self, messages: Sequence[BaseMessage], documents: list[dict] | None = None) -> str:
        message = self.model.invoke(list(messages), max_new_tokens=self.options.summary_tokens, documents=documents)
        meta = message.response_metadata
        self.calls += 1
        self.prompt_tokens += int(meta.get("prompt_tokens") or 0)
        self.reused_tokens += int(meta.get("reused_tokens") or 0)
        return str(message.content).strip()

    def key(self, kind: str, content_hash: str) -> str:
        parts = (PROMPT_VERSION, kind, self.backend.name, str(self.window), str(self.options.summary_tokens),
                 self.options.focus or "", content_hash)
        return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()

    # ---- map ---------------------------------------------------------------------------------
    def summarise_file(self, doc: SourceText) -> tuple[dict[str, Any], bool]:
        """(record, cached): the file's summary with the spans it covers."""
        key = self.key("file", doc.content_hash)
        cached = self.cache.get(key)
        if cached is not None and "summary" in cached:
            return cached, True
        title = doc.title or os.path.basename(doc.path)
        whole = [SystemMessage(MAP_SYSTEM), HumanMessage(MAP_FILE.format(title=title, text=doc.text, focus=self.focus))]
        if len(doc.text) // CHARS_PER_TOKEN_BOUND <= self.prompt_limit and self.fits(whole):
            record = {"summary": self.call(whole), "spans": [doc.span(0, len(doc.text))], "chunks": 1}
        else:
            record = self._summarise_parts(doc, title)
        self.cache.put(key, record)
        return record, False

    def _summarise_parts(self, doc: SourceText, title: str) -> dict[str, Any]:
        chunks = split_for_budget(self, doc, lambda text: self._part_messages(title, 999, 999, "chars 0-0", text))
        items = []
        for number, chunk in enumerate(chunks, start=1):
            self.progress("parts", number - 1, len(chunks))
            where = f"chars {chunk.start}-{chunk.end}" + (f", page {chunk.page}" if chunk.page else "")
            summary = self.call(self._part_messages(title, number, len(chunks), where, chunk.text))
            items.append(Item([number], f"Part {number} ({where})", summary))
        self.progress("parts", len(chunks), len(chunks))
        merge = self._group_parts(title)
        merged = self.reduce(items, merge, merge, lambda ids: f"Parts {ids[0]}-{ids[-1]} (merged)", count_level=False)
        return {"summary": merged, "spans": [doc.span(c.start, c.end) for c in chunks], "chunks": len(chunks)}

    def _part_messages(self, title: str, part: int, parts: int, where: str, text: str) -> list[BaseMessage]:
        return [SystemMessage(MAP_SYSTEM), HumanMessage(MAP_PART.format(
            title=title, part=part, parts=parts, where=where, text=text, focus=self.focus))]

    def _group_parts(self, title: str):
        return lambda group: [SystemMessage(MAP_SYSTEM), HumanMessage(MERGE_PARTS.format(
            title=title, items=format_items(group), focus=self.focus))]

    # ---- reduce ------------------------------------------------------------------------------
    def reduce(self, items: list[Item], final: Callable[[list[Item]], list[BaseMessage]],
               group: Callable[[list[Item]], list[BaseMessage]], merged_label: Callable[[list[int]], str],
               count_level: bool = True) -> str:
        """One call over ``items`` when they fit; else merge groups that fit, level by level."""
        if len(items) == 1 and not count_level:
            return items[0].text
        while True:
            sizes = [self.model.get_num_tokens(format_items([item])) + 2 for item in items]
            messages = final(items)
            if self.count(final([])) + sum(sizes) <= self.prompt_limit * 1.25 and self.fits(messages):
                self.progress("reduce", self.reduce_calls, None)
                text = self.call(messages)
                self.reduce_calls += 1
                return text
            groups = self.group_items(items, sizes, group)
            if all(len(g) == 1 for g in groups):
                raise AgentError(f"the {self.window:,}-token context window cannot hold two summaries of "
                                 f"{self.options.summary_tokens} tokens in one prompt; use a model with a larger "
                                 f"window or shorter summaries", fix="summary_tokens")
            if count_level:
                self.reduce_levels += 1
            items = [g[0] if len(g) == 1 else self._merge(g, group, merged_label) for g in groups]

    def _merge(self, members: list[Item], group: Callable[[list[Item]], list[BaseMessage]],
               merged_label: Callable[[list[int]], str]) -> Item:
        self.progress("reduce", self.reduce_calls, None)
        text = self.call(group(members))
        self.reduce_calls += 1
        ids = sorted({i for member in members for i in member.ids})
        return Item(ids, merged_label(ids), text)

    def group_items(self, items: list[Item], sizes: list[int],
                    group: Callable[[list[Item]], list[BaseMessage]]) -> list[list[Item]]:
        """Consecutive items packed greedily into groups whose merge prompt fits the window."""
        overhead = self.count(group([]))
        groups: list[list[Item]] = []
        current: list[Item] = []
        used = overhead
        for item, size in zip(items, sizes):
            if current and used + size > self.prompt_limit:
                groups.extend(self._exact(current, group))
                current, used = [], overhead
            current.append(item)
            used += size
        if current:
            groups.extend(self._exact(current, group))
        return groups

    def _exact(self, members: list[Item], group) -> list[list[Item]]:
        """Split an estimated group in halves until its real prompt fits."""
        if len(members) == 1 or self.fits(group(members)):
            return [members]
        half = len(members) // 2
        return self._exact(members[:half], group) + self._exact(members[half:], group)

    # ---- long context ---------------------------------------------------------------------------
    def long_context_fit(self, docs: Sequence[SourceText]) -> tuple[bool, str, int | None]:
        """(fits, why, prompt tokens) for one call over all documents."""
        share = 1.0 if self.options.mode == "long-context" else self.options.long_context_share
        budget = int(self.window * share) - self.options.summary_tokens
        if self.options.mode == "map-reduce" or share <= 0:
            return False, "map-reduce was asked for", None
        chars = sum(len(doc.text) for doc in docs)
        if chars // CHARS_PER_TOKEN_BOUND > budget:
            return False, (f"{len(docs)} file(s) of {chars:,} characters cannot fit {share:.0%} of the "
                           f"{self.window:,}-token window"), None
        tokens = self.count([HumanMessage(self.long_prompt())], documents=documents_of(docs))
        if tokens > budget:
            return False, (f"{len(docs)} file(s) are {tokens:,} tokens, over {share:.0%} of the {self.window:,}-token "
                           f"window"), tokens
        return True, (f"{len(docs)} file(s) are {tokens:,} tokens, within {share:.0%} of the {self.window:,}-token "
                      f"window: one call over all of them"), tokens

    def long_prompt(self) -> str:
        return LONG.format(focus=self.focus)


def documents_of(docs: Sequence[SourceText]) -> list[dict[str, Any]]:
    return [doc.as_document(number) for number, doc in enumerate(docs, start=1)]


def format_items(items: Sequence[Item]) -> str:
    return "\n\n".join(f"{item.label}:\n{item.text}" for item in items)


def split_for_budget(summarizer_or_model, doc: SourceText, messages_for: Callable[[str], list[BaseMessage]],
                     limit: int | None = None) -> list:
    """The document's chunks (retrieval's Chunker, in the model's tokens) so each fits ``messages_for(chunk)``."""
    model = getattr(summarizer_or_model, "model", summarizer_or_model)
    limit = limit if limit is not None else summarizer_or_model.prompt_limit
    margin = getattr(getattr(summarizer_or_model, "options", None), "margin_tokens", 16)
    overhead = len(model.prompt_token_ids(messages_for("")))
    room = limit - overhead - margin
    if room < 32:
        raise AgentError(f"the prompt leaves {max(room, 0)} tokens of the window for document text; use a model "
                         f"with a larger window or shorter answers", fix="summary_tokens")
    chunker = Chunker(model.get_num_tokens, chunk_tokens=room, overlap=0)
    return chunker.chunk(Extracted(doc.text, markup=doc.markup if doc.markup != "jsonl" else None, pages=doc.pages))


def summarize_documents(chat_model, docs: Sequence[SourceText], options: SummaryOptions | None = None,
                        cache: SummaryCache | None = None, progress: Progress | None = None,
                        prepare_long_context: Callable[[list[dict[str, Any]]], str | None] | None = None
                        ) -> dict[str, Any]:
    """Summarise ``docs`` (long-context or map-reduce, see the module docstring); returns the report.

    ``prepare_long_context(documents)`` runs before the one long-context call (the app makes or
    loads a state pack of exactly those documents there) and returns the pack's name, if any.
    """
    options = options or SummaryOptions()
    if options.mode not in SUMMARY_MODES:
        raise AgentError(f"unknown summary mode {options.mode!r}: use one of {', '.join(SUMMARY_MODES)}")
    if not docs:
        raise AgentError("nothing to summarise: no readable files")
    run = Summarizer(chat_model, options, cache, progress)
    if options.summary_tokens >= run.window // 2:
        raise AgentError(f"summaries of {options.summary_tokens} tokens leave too little of the {run.window:,}-token "
                         f"window for text", fix="summary_tokens")
    fits, why, tokens = run.long_context_fit(docs)
    if options.mode == "long-context" and not fits:
        raise AgentError(f"long-context mode is impossible: {why}", fix="map_reduce")
    report = _long_context(run, docs, prepare_long_context) if fits else _map_reduce(run, docs)
    report.update(why=why, long_context_tokens=tokens)
    return _finish(run, docs, report)


def _long_context(run: Summarizer, docs: Sequence[SourceText], prepare) -> dict[str, Any]:
    key = run.key("long", hashlib.sha256("".join(d.content_hash for d in docs).encode()).hexdigest())
    cached = run.cache.get(key)
    run.progress("summarise", 0, 1)
    pack = None
    if cached is None:
        documents = documents_of(docs)
        pack = prepare(documents) if prepare else None
        cached = {"summary": run.call([HumanMessage(run.long_prompt())], documents=documents)}
        run.cache.put(key, cached)
        hit = False
    else:
        hit = True
    run.progress("summarise", 1, 1)
    files = [{"id": n, "path": d.path, "cached": hit, "chunks": 1, "spans": [d.span(0, len(d.text))]}
             for n, d in enumerate(docs, start=1)]
    return {"mode": "long-context", "pack": pack, "summary": cached["summary"], "files": files}


def _map_reduce(run: Summarizer, docs: Sequence[SourceText]) -> dict[str, Any]:
    files, items = [], []
    for number, doc in enumerate(docs, start=1):
        run.progress("map", number - 1, len(docs))
        record, hit = run.summarise_file(doc)
        files.append({"id": number, "path": doc.path, "cached": hit, "chunks": record["chunks"],
                      "spans": record["spans"], "summary": record["summary"]})
        items.append(Item([number], f"[{number}] {doc.path}", record["summary"]))
    run.progress("map", len(docs), len(docs))
    final = lambda group: [SystemMessage(MAP_SYSTEM), HumanMessage(FINAL.format(  # noqa: E731
        count=len(docs), items=format_items(group), focus=run.focus))]
    grouped = lambda group: [SystemMessage(MAP_SYSTEM), HumanMessage(GROUP.format(  # noqa: E731
        items=format_items(group), focus=run.focus))]
    label = lambda ids: f"Files [{ids[0]}] to [{ids[-1]}] (merged)"  # noqa: E731  (groups are consecutive)
    return {"mode": "map-reduce", "pack": None, "summary": run.reduce(items, final, grouped, label), "files": files}


def _finish(run: Summarizer, docs: Sequence[SourceText], report: dict[str, Any]) -> dict[str, Any]:
    known = {str(f["id"]) for f in report["files"]}
    cited = cited_ids(report["summary"])
    unknown = [i for i in cited if i not in known]
    report["summary"] = strip_unknown(report["summary"], unknown).strip()
    for entry in report["files"]:
        entry["cited"] = str(entry["id"]) in cited
    report.update(
        files_total=len(docs), cached=sum(1 for f in report["files"] if f["cached"]),
        computed=sum(1 for f in report["files"] if not f["cached"]), unknown_citations=unknown,
        reduce_levels=run.reduce_levels, reduce_calls=run.reduce_calls, model_calls=run.calls,
        prompt_tokens=run.prompt_tokens, reused_tokens=run.reused_tokens, model=run.backend.name,
        context_window=run.window, random_weights=bool(getattr(run.backend, "random_weights", False)))
    return report
