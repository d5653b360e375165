"""Scripted workflows over whole files: ``summarize`` and ``extract``, as the CLI and the Python API call them.

Reads files through retrieval's scanner and loaders (PDF pages, DOCX, code, data; a file
that cannot be used is reported with its reason and the rest go on), or the indexed files
of a collection through the retrieval service; takes the chat model from the runtime
app/compose.py builds (app/runtime.py) unless one is given; checks the output path before any model work; and hands plain
``SourceText`` documents to the torch-free cores in agents/summarize.py and
agents/extract.py. In long-context mode with the local engine, the documents are made
into a state pack (``auto-<collection>``, shared with ``ask --policy auto``, or
``summary-files``, replaced when other files are summarised) that the one summary call
resumes from. Summaries are cached under ``<home>/summaries/``. Extract rows are appended
and flushed one by one. Knows Settings, files and packs; nothing of how prompts are built
or answers checked.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

from feldspar.settings import Settings, SettingsError

Progress = Callable[[str, int, "int | None"], None]
FILES_PACK = "summary-files"  # one pack for summaries of paths, replaced when the files change: disk stays bounded


class OutputNotWritable(SettingsError):
    """The output file cannot be written (checked before any model work)."""


# ---- inputs --------------------------------------------------------------------------------
def read_sources(paths: Sequence[str | Path], max_bytes: int) -> tuple[list, list[dict[str, Any]]]:
    """(documents, skipped): every readable file under ``paths``; the rest with a status and reason."""
    from feldspar.pack_documents import scan_paths

    docs, skipped, seen = [], [], set()
    for raw in paths:
        given = str(raw)
        if not Path(given).expanduser().exists():
            skipped.append({"path": given, "status": "failed", "reason": "no such file or directory"})
            continue
        is_dir = Path(given).expanduser().is_dir()
        for scanned in scan_paths([given], max_bytes):
            if os.path.realpath(scanned.path) in seen:  # named twice (a file and its folder): read once
                continue
            seen.add(os.path.realpath(scanned.path))
            shown = os.path.join(given, scanned.key) if is_dir else given
            doc, problem = _read_one(shown, scanned.path, os.path.dirname(scanned.path), scanned.skip_reason,
                                     max_bytes)
            (docs.append(doc) if doc is not None else skipped.append(problem))
    return docs, skipped


def _read_one(shown: str, path: str, root: str, skip_reason: str | None, max_bytes: int):
    from feldspar.agents.summarize import SourceText
    from feldspar.retrieval.loaders import Unreadable, load_file

    if skip_reason:
        return None, {"path": shown, "status": "skipped", "reason": skip_reason}
    try:
        extracted = load_file(path, root, max_bytes)
    except Unreadable as exc:
        return None, {"path": shown, "status": exc.status, "reason": exc.reason}
    except OSError as exc:
        return None, {"path": shown, "status": "failed", "reason": f"cannot read: {exc.strerror or exc}"}
    return SourceText(path=shown, text=extracted.text, title=os.path.basename(shown), source=os.path.realpath(path),
                      pages=list(extracted.pages), markup=extracted.markup), None


def collection_sources(settings: Settings, collection: str) -> tuple[list, list[dict[str, Any]]]:
    """The indexed files of ``collection`` (listed by the retrieval service, read by its loaders)."""
    from feldspar.compose import build_retrieval, collection_search

    settings = settings.model_copy(update={"collection": collection})
    service = build_retrieval(settings)
    try:
        collection_search(settings, service)  # an unknown or empty collection fails here
        docs, skipped = [], []
        for row in service.sources(collection, status="indexed"):
            doc, problem = _read_one(row["path"], os.path.join(row["root"], row["path"]), row["root"], None,
                                     settings.max_file_bytes)
            (docs.append(doc) if doc is not None else skipped.append(problem))
        return docs, skipped
    finally:
        service.close()


def _no_input(paths, collection, skipped) -> Exception:
    from feldspar.agents.errors import AgentError

    where = f"collection {collection!r}" if collection else ", ".join(str(p) for p in paths or [])
    reasons = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[:5])
    return AgentError(f"no readable files in {where}" + (f" ({reasons})" if reasons else ""))


# ---- outputs -------------------------------------------------------------------------------
def check_output(out: Path | str | None) -> Path | None:
    """The output path, refused at once when it is a folder or its folder cannot be written."""
    if out is None:
        return None
    out = Path(out).expanduser()
    if out.is_dir():
        raise OutputNotWritable(f"the output {out} is a directory; give a file name")
    folder = out.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".feldspar-write-check-", dir=folder)
        os.close(handle)
        os.unlink(probe)
        if out.exists() and not os.access(out, os.W_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as exc:
        raise OutputNotWritable(f"cannot write the output {out} ({(exc.strerror or type(exc).__name__).lower()})") from None
    return out


def write_atomically(out: Path, text: str) -> None:
    handle, temp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        stream.write(text)
    os.replace(temp, out)


def _chat_model(settings: Settings, chat_model, max_new_tokens: int | None = None):
    """(chat model, local engine or None): the given model (and the engine behind it, if any), or the
    chat model of the runtime of ``settings`` (ChatGranite over the local engine or the remote server)."""
    if chat_model is not None:
        return chat_model, getattr(chat_model.backend, "engine", None)
    from feldspar.compose import build_runtime

    runtime = build_runtime(settings)
    return runtime.chat_model(), runtime.local_engine()


# ---- summarize -----------------------------------------------------------------------------
def summarize(settings: Settings, paths: Sequence[str | Path] | None = None, collection: str | None = None,
              out: Path | str | None = None, chat_model=None, progress: Progress | None = None,
              **options: Any) -> dict[str, Any]:
    """Summarise files or a collection into markdown (written to ``out`` when given); returns the report.

    Options: ``mode`` ("auto", "map-reduce", "long-context"), ``summary_tokens`` (default
    ``settings.max_new_tokens``), ``focus`` (what to summarise for), ``cache`` (default True),
    ``title``.
    """
    from feldspar.agents.errors import AgentError
    from feldspar.agents.summarize import SummaryCache, SummaryOptions, summarize_documents
    from feldspar.home import require_writable

    paths = [paths] if isinstance(paths, (str, Path)) else paths
    if bool(paths) == bool(collection):
        raise AgentError("summarize needs files or a collection, not both and not neither")
    out = check_output(out)
    require_writable(settings.home)
    docs, skipped = collection_sources(settings, collection) if collection else read_sources(paths,
                                                                                             settings.max_file_bytes)
    if not docs:
        raise _no_input(paths, collection, skipped)
    chat_model, engine = _chat_model(settings, chat_model)
    summary_options = SummaryOptions(
        summary_tokens=options.get("summary_tokens") or settings.max_new_tokens,
        mode=options.get("mode") or "auto", long_context_share=settings.long_context_share,
        focus=options.get("focus"))
    cache = SummaryCache(settings.home / "summaries" if options.get("cache", True) else None)
    prepare = _pack_maker(settings, engine, collection, progress) if engine is not None else None
    report = summarize_documents(chat_model, docs, summary_options, cache, progress, prepare)
    report.update(skipped=skipped, collection=collection, out=str(out) if out else None)
    report["markdown"] = render_markdown(report, options.get("title") or "Summary")
    if out is not None:
        write_atomically(out, report["markdown"])
    return report


def _pack_maker(settings: Settings, engine, collection: str | None,
                progress: Progress | None) -> Callable[[list[dict]], str]:
    """Makes (or reuses) the state pack of exactly the documents of the long-context call and loads it."""

    def prepare(documents: list[dict[str, Any]]) -> str:
        from feldspar.compose import attach_pack
        from feldspar.long_context import ensure_pack, pack_name
        from feldspar.pack_documents import PackDocuments
        from feldspar.retrieval.scan import sha256_file

        sources = [{"path": d["source"], "bytes": os.path.getsize(d["source"]), "sha256": sha256_file(d["source"])}
                   for d in documents]
        name = pack_name(collection) if collection else FILES_PACK
        prefill = (lambda done, total: progress("prefill", done, total)) if progress else None
        ensure_pack(engine, settings.packs_dir, name, PackDocuments(documents=documents, sources=sources), prefill)
        attach_pack(settings, engine, name)
        return name

    return prepare


def mode_line(report: dict[str, Any]) -> str:
    files = report["files_total"]
    if report["mode"] == "long-context":
        where = f"state pack {report['pack']!r}" if report.get("pack") else (
            "from cache" if report["cached"] else "no state pack (not a local engine)")
        return f"long-context: {files} file(s) in one call ({where})"
    levels = f", hierarchical reduce in {report['reduce_levels'] + 1} levels" if report["reduce_levels"] else ""
    return (f"map-reduce: {files} file(s), {report['computed']} summarised, {report['cached']} from cache"
            f"{levels}, {report['model_calls']} model call(s)")


def _where(entry: dict[str, Any]) -> str:
    spans = entry.get("spans") or []
    if not spans:
        return ""
    text = f"chars {spans[0]['start']}-{spans[-1]['end']}"
    if len(spans) > 1:
        text += f" in {len(spans)} chunks"
    pages = sorted({p for s in spans for p in (s.get("pages") or [s.get("page")]) if p})
    if pages:
        text += f", page {pages[0]}" if pages[0] == pages[-1] else f", pages {pages[0]}-{pages[-1]}"
    return text


def render_markdown(report: dict[str, Any], title: str = "Summary") -> str:
    from feldspar.labels import RANDOM_LABEL

    lines = [f"# {title}", ""]
    if report.get("random_weights"):
        lines += [f"**{RANDOM_LABEL}**", ""]
    lines += [f"_Mode: {mode_line(report)}. Model: {report['model']}._", "",
              report["summary"] or "(the model returned no text)", "", "## Sources", ""]
    for entry in report["files"]:
        cited = " (cited)" if entry.get("cited") else ""
        lines.append(f"- [{entry['id']}] {entry['path']} — {_where(entry)}{cited}")
    if report["mode"] == "map-reduce":
        lines += ["", "## File summaries"]
        for entry in report["files"]:
            lines += ["", f"### [{entry['id']}] {entry['path']}", "", entry.get("summary") or "(no text)"]
    return "\n".join(lines) + "\n"


# ---- extract -------------------------------------------------------------------------------
def load_schema(schema: Any) -> Any:
    """A schema object, or a path to a JSON file holding one; not JSON (Schema) raises SchemaInvalid."""
    from feldspar.agents.extract import SchemaInvalid, check_schema

    name = "the schema"
    if isinstance(schema, (str, Path)):
        name = str(schema)
        try:
            schema = json.loads(Path(schema).expanduser().read_text(encoding="utf-8"))
        except OSError as exc:
            raise SchemaInvalid(f"cannot read the schema {name}: {(exc.strerror or str(exc)).lower()}") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SchemaInvalid(f"{name} is not JSON: {exc}") from None
    check_schema(schema, name)
    return schema


def _done_rows(out: Path) -> set[tuple]:
    """Keys of rows already in ``out``; a last line cut short (a killed run) is removed."""
    if not out.exists():
        return set()
    data = out.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        with open(out, "r+b") as handle:
            handle.truncate(len(data))
    done = set()
    for line in data.decode("utf-8", "replace").splitlines():
        try:
            row = json.loads(line)
            done.add(_row_key(row["path"], row.get("sha256"), row.get("chunk")))
        except (ValueError, KeyError, TypeError):
            continue
    return done


def _row_key(path: str, sha: str | None, chunk: int | None) -> tuple:
    return (path, sha, chunk)


def extract(settings: Settings, schema: Any, paths: Sequence[str | Path], out: Path | str | None,
            per_chunk: bool = False, retries: int = 2, chat_model=None, progress: Progress | None = None,
            constrained: bool = True) -> dict[str, Any]:
    """Rows of JSON per file (or chunk) appended to ``out`` as made; rows already there are not redone.

    ``constrained`` decodes each answer constrained to the schema where the model can (the local
    engine; a remote server given the schema); False keeps the validate-and-retry path only."""
    from feldspar.agents.extract import ExtractOptions, extract_rows

    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    schema = load_schema(schema)  # before any model work
    out = check_output(out)
    done = _done_rows(out) if out is not None else set()
    docs, skipped = read_sources(paths, settings.max_file_bytes)
    if not docs:
        raise _no_input(paths, None, skipped)
    chat_model, _engine = _chat_model(settings, chat_model)
    rows: list[dict[str, Any]] = []
    stream = open(out, "a", encoding="utf-8") if out is not None else None

    def on_row(row: dict[str, Any]) -> None:
        if stream is None:
            rows.append(row)
            return
        stream.write(json.dumps(row, ensure_ascii=False) + "\n")
        stream.flush()

    try:
        options = ExtractOptions(retries=retries, per_chunk=per_chunk, max_new_tokens=settings.max_new_tokens,
                                 constrained=constrained)
        report = extract_rows(chat_model, schema, docs, options,
                              on_row, lambda doc, chunk, span: _row_key(doc.path, doc.content_hash, chunk) in done,
                              progress)
    finally:
        if stream is not None:
            stream.close()
    return {**report, "skipped": skipped, "out": str(out) if out else None, **({"rows_data": rows} if out is None else {})}
