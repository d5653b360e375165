"""CLI for state packs: `pack create|list|show|rm` (`ask --pack` lives in app/cli/agent.py).

Turns flags into Settings and calls model.packs and the engine; shows a
progress bar on stderr while a long prompt is prefilled; prints tables, or JSON with
--json. Knows nothing of how states are cached, saved or checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from feldspar.cli.generate import DeviceOpt, DtypeOpt
from feldspar.cli.root import HomeOpt, JsonOpt, ModelOpt, console, err_console, pack_app, print_json, print_table, settings_from
from feldspar.cli.progress import prefill_progress
from feldspar.compose import build_runtime, pack_tool_schemas



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
    tools_module: Annotated[Optional[Path], typer.Option(
        "--tools-module", help="the tools module the chats on this pack will use (its tools sit before the documents)")] = None,
    model: ModelOpt = None, device: DeviceOpt = None, dtype: DtypeOpt = None,
    json_out: JsonOpt = False, home: HomeOpt = None,
) -> None:
    """Read files as Granite documents, prefill them once and save the state to disk."""
    from feldspar.cli.interrupt import on_interrupt
    from feldspar.home import require_writable
    from feldspar.model.packs import check_new_pack, create_pack
    from feldspar.pack_documents import read_pack_documents

    settings = settings_from(home=home, model=model, device=device, dtype=dtype)
    tools = pack_tool_schemas(settings, tools_module)  # a broken tools module fails before the model loads
    require_writable(settings.home)
    require_writable(settings.packs_dir, "pack folder")  # before the prefill, not after it
    check_new_pack(settings.packs_dir, name, force)
    read = read_pack_documents(paths, settings.max_file_bytes)  # unreadable input fails before the model loads
    for skipped in read.skipped:
        err_console.print(f"[yellow]{skipped['status']}[/yellow] {escape(skipped['path'])}: {escape(skipped['reason'])}")
    engine = build_runtime(settings).engine()
    on_interrupt(f"interrupted; no pack was saved" + (f" (the existing pack {name!r} is unchanged)" if force else ""))
    if not json_out:
        err_console.print(f"[dim]prefilling {len(read.documents)} document(s) with {escape(engine.name)}…[/dim]")
    with prefill_progress(not json_out) as progress:
        meta = create_pack(engine, settings.packs_dir, name, read.documents, read.sources, force=force,
                           progress=progress, tools=tools)
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
    good = [row for row in rows if not row.get("reason")]
    for row in good:
        row["size"] = _human_bytes(row.get("state_bytes"))
    if good:
        print_table(good, ["name", "model", "dtype", "tokens", "documents", "size", "created"], title="state packs")
    for row in rows:  # a damaged pack: one short line each (--json has the full message)
        if row.get("reason"):
            console.print(f"[red]damaged[/red] {escape(row['name'])}: {escape(row['reason'])} "
                          f"(`feldspar pack rm {escape(row['name'])}`, then create it again)", soft_wrap=True)


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
