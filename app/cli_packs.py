"""CLI for state packs and questions: `pack create|list|show|rm`, `ask`, `bench reuse`.

Turns flags into Settings and calls model.packs / the engine / bench.reuse; shows a
progress bar on stderr while a long prompt is prefilled; prints tables, or JSON with
--json. Knows nothing of how states are cached, saved or checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape

from feldspar.cli_model import (
    DeviceOpt, DtypeOpt, MaxNewOpt, NoReuseOpt, SeedOpt, TempOpt, TopPOpt, VerboseOpt, _params, label_random,
    print_stats, stream_to_terminal,
)
from feldspar.cli_output import quiet_libraries
from feldspar.cli_root import (
    HomeOpt, JsonOpt, ModelOpt, app, console, err_console, pack_app, print_json, print_table,
    settings_from,
)
from feldspar.cli_progress import prefill_progress
from feldspar.compose import build_engine

PackOpt = Annotated[Optional[str], typer.Option("--pack", "-p", help="answer against this state pack")]
def _human_bytes(count: int | None) -> str:
    if count is None:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return ""


# ---- pack ------------------------------------------------------------------------------
@pack_app.command("create")
def pack_create(
    name: Annotated[str, typer.Argument(help="pack name (letters, digits, . _ -)")],
    paths: Annotated[list[Path], typer.Argument(help="files or directories: text, markdown, code, PDF, …")],
    force: Annotated[bool, typer.Option("--force", help="replace an existing pack of that name")] = False,
    model: ModelOpt = None, device: DeviceOpt = None, dtype: DtypeOpt = None,
    json_out: JsonOpt = False, home: HomeOpt = None,
) -> None:
    """Read files as Granite documents, prefill them once and save the state to disk."""
    from feldspar.home import require_writable
    from feldspar.model.packs import check_new_pack, create_pack
    from feldspar.pack_documents import read_pack_documents

    settings = settings_from(home=home, model=model, device=device, dtype=dtype)
    require_writable(settings.home)
    require_writable(settings.packs_dir, "pack folder")  # before the prefill, not after it
    check_new_pack(settings.packs_dir, name, force)
    read = read_pack_documents(paths, settings.max_file_bytes)  # unreadable input fails before the model loads
    for skipped in read.skipped:
        err_console.print(f"[yellow]{skipped['status']}[/yellow] {escape(skipped['path'])}: {escape(skipped['reason'])}")
    engine = build_engine(settings)
    with prefill_progress(not json_out) as progress:
        meta = create_pack(engine, settings.packs_dir, name, read.documents, read.sources, force=force,
                           progress=progress)
    if json_out:
        print_json({**meta, "skipped": read.skipped})
        return
    console.print(f"pack {name!r}: {meta['tokens']:,} tokens from {meta['documents']} file(s), "
                  f"{_human_bytes(meta['state_bytes'])} of state, prefill {meta['prefill_s']:.1f} s, model {meta['model']}")


@pack_app.command("list")
def pack_list(json_out: JsonOpt = False, home: HomeOpt = None) -> None:
    """The saved state packs."""
    from feldspar.model.packs import list_packs

    rows = list_packs(settings_from(home=home).packs_dir)
    if json_out:
        print_json(rows)
        return
    if not rows:
        console.print("no packs yet; make one with `feldspar pack create NAME FILE…`")
        return
    for row in rows:
        row["size"] = _human_bytes(row.get("state_bytes"))
    print_table(rows, ["name", "model", "dtype", "tokens", "documents", "size", "created", "error"], title="state packs")


@pack_app.command("show")
def pack_show(name: Annotated[str, typer.Argument(help="pack name")], json_out: JsonOpt = False,
              home: HomeOpt = None) -> None:
    """Everything recorded about one pack: model, fingerprint, versions, sources, sizes."""
    from feldspar.model.packs import read_meta

    meta = read_meta(settings_from(home=home).packs_dir, name)
    if json_out:
        print_json(meta)
        return
    rows = [{"field": k, "value": v} for k, v in meta.items() if k != "sources"]
    rows += [{"field": "source", "value": f"{s['path']} ({_human_bytes(s['bytes'])})"} for s in meta.get("sources", [])]
    print_table(rows, ["field", "value"], title=f"pack {name}")


@pack_app.command("rm")
def pack_rm(name: Annotated[str, typer.Argument(help="pack name")], home: HomeOpt = None) -> None:
    """Delete a pack."""
    from feldspar.model.packs import remove_pack

    remove_pack(settings_from(home=home).packs_dir, name)
    console.print(f"removed pack {name!r}")


# ---- ask -------------------------------------------------------------------------------
def _engine_for_pack(settings_flags: dict[str, Any], pack: str | None):
    """Settings and engine; a pack's own model and dtype are the default when not given."""
    from feldspar.model.packs import read_meta

    flags = dict(settings_flags)
    if pack is not None:
        meta = read_meta(settings_from(home=flags.get("home")).packs_dir, pack)
        flags["model"] = flags.get("model") or meta.get("model_source")
        flags["dtype"] = flags.get("dtype") or meta.get("dtype")
    settings = settings_from(**flags)
    return settings, build_engine(settings)


def _answer(engine, documents, question: str, params, show: bool, label: bool):
    from feldspar.model.packs import question_ids

    if documents is None:
        ids = engine.encode(engine.render([{"role": "user", "content": question}]))
    else:
        ids = question_ids(engine, documents, question)
    with prefill_progress(show) as progress:
        stream = engine.stream(ids, params, progress)
        if show and label:
            console.print(f"[bold]Q:[/bold] {escape(question)}")
        label_random(engine, show)
        return stream_to_terminal(stream, show=show)


@app.command()
def ask(
    questions: Annotated[list[str], typer.Argument(help="one or more questions; each is answered separately")],
    pack: PackOpt = None, model: ModelOpt = None, max_new_tokens: MaxNewOpt = None, temperature: TempOpt = None,
    top_p: TopPOpt = None, seed: SeedOpt = None, no_reuse: NoReuseOpt = False, verbose: VerboseOpt = False,
    json_out: JsonOpt = False, device: DeviceOpt = None, dtype: DtypeOpt = None, home: HomeOpt = None,
) -> None:
    """Answer questions, optionally against a state pack; all questions reuse the loaded state."""
    from feldspar.model.packs import install_pack, load_pack

    quiet_libraries(verbose)
    settings, engine = _engine_for_pack({"home": home, "model": model, "device": device, "dtype": dtype}, pack)
    params = _params(settings, max_new_tokens, temperature, top_p, seed, no_reuse)
    loaded = load_pack(engine, settings.packs_dir, pack) if pack else None
    if loaded is not None:
        install_pack(engine, loaded)
        if verbose and not json_out:
            err_console.print(f"[dim]pack {pack!r}: {len(loaded.token_ids):,} tokens loaded in {loaded.load_s:.2f} s[/dim]")
    answers = []
    for question in questions:
        result = _answer(engine, loaded.documents if loaded else None, question, params, show=not json_out,
                         label=len(questions) > 1)
        answers.append({"question": question, **result.to_dict(), "random_weights": engine.random_weights})
        if verbose and not json_out:
            print_stats(result, engine.random_weights)
    if json_out:
        print_json({"model": engine.name, "pack": pack, "pack_load_s": round(loaded.load_s, 4) if loaded else None,
                    "random_weights": engine.random_weights, "answers": answers})
