"""`feldspar models` (the Granite 4.0 catalog) and `feldspar models random` (random checkpoints).

Knows how to present the catalog and call the checkpoint writer; it does not load models,
download weights or know where the app keeps checkpoints. Heavy imports (torch,
transformers) happen only inside `models random` so listing the catalog stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer
from rich import box
from rich.table import Table

from feldspar.cli.root import JsonOpt, console, models_app, print_json
from feldspar.labels import human_count, spec_record
from feldspar.model.catalog import CATALOG, DEFAULT_MODEL, ModelSpec

TABLE_COLUMNS = ["name", "kind", "params", "active", "context", "attn/mamba", "type", "hub id"]
NARROW_DROP = ("type", "hub id")
NUMERIC = ("params", "active", "context", "attn/mamba")


def _table_row(spec: ModelSpec) -> dict[str, Any]:
    return {
        "name": spec.name + (" *" if spec.name == DEFAULT_MODEL else ""),
        "kind": spec.kind,
        "params": human_count(spec.params),
        "active": human_count(spec.active_params),
        "context": f"{spec.context // 1024}K",
        "attn/mamba": f"{spec.attention_layers}/{spec.mamba_layers}",
        "type": "base" if spec.base else "instruct",
        "hub id": spec.hub_id,
    }


@models_app.callback(invoke_without_command=True)
def models(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List the Granite 4.0 language models (table, or --json)."""
    if ctx.invoked_subcommand is not None:
        return
    print_catalog(as_json=as_json)


def print_catalog(as_json: bool = False) -> None:
    """Print the catalog as a table, or as a JSON list of spec records."""
    if as_json:
        print_json([spec_record(spec) for spec in CATALOG])
        return
    _print_catalog_table([_table_row(spec) for spec in CATALOG])
    choice = engine_choice()
    console.print(f"local engine on this machine: {choice['dtype']} ({choice['dtype_reason']}), "
                  f"weights {choice['quant']} ({choice['quant_reason']}), "
                  f"compiled decode {choice['compile']} ({choice['compile_reason']}), compiled prefill scan "
                  f"{choice['compile_prefill']}; {choice['kernels']}",
                  highlight=False)


def engine_choice() -> dict[str, str]:
    """The dtype, quantisation and compilation the local engine would load with under the current
    settings, and why."""
    from feldspar.cli.root import settings_from
    from feldspar.model.loader import (compile_choice, compiles_scan, dtype_choice, kernel_choice, pick_device,
                                       quant_choice)

    settings = settings_from()
    device = pick_device("cpu" if settings.device == "cpu" else "auto")
    dtype, dtype_reason = dtype_choice(settings.dtype, device)
    quant, quant_reason = quant_choice(settings.quant, device)
    compiled, compile_reason = compile_choice(settings.compile, device)
    return {"device": device.type, "dtype": str(dtype).removeprefix("torch."), "dtype_reason": dtype_reason,
            "quant": quant, "quant_reason": quant_reason, "compile": "on" if compiled else "off",
            "compile_reason": compile_reason,
            "compile_prefill": "on" if compiles_scan(settings.compile, compiled) else "off",
            "kernels": kernel_choice(device)}


def _print_catalog_table(rows: list[dict[str, Any]]) -> None:
    # On narrow terminals drop the columns the name already implies (hub id, -base suffix).
    columns = TABLE_COLUMNS if console.width >= 120 else [c for c in TABLE_COLUMNS if c not in NARROW_DROP]
    table = Table(title="Granite 4.0 language models (* = default)", box=box.SIMPLE_HEAD, show_edge=False)
    for col in columns:
        table.add_column(col, no_wrap=True, justify="right" if col in NUMERIC else "left")
    for row in rows:
        table.add_row(*(str(row[col]) for col in columns))
    console.print(table)


@models_app.command("random")
def random_checkpoint(
    name: Annotated[str, typer.Argument(help="catalog name, e.g. h-350m or granite-4.0-h-tiny")],
    directory: Annotated[Path, typer.Argument(help="output directory (must be empty)")],
    tiny: Annotated[bool, typer.Option("--tiny", help="miniature with the same layer kinds")] = False,
    seed: Annotated[int, typer.Option("--seed", help="random seed")] = 0,
    dtype: Annotated[Literal["float32", "bfloat16"], typer.Option("--dtype", help="weight dtype")] = "float32",
    force: Annotated[bool, typer.Option("--force", help="write into a non-empty directory")] = False,
    allow_large: Annotated[bool, typer.Option("--allow-large", help="allow checkpoints over 8 GiB")] = False,
    quant: Annotated[Optional[Literal["none", "int8", "int4"]], typer.Option("--quant",
                                                 help="build layer by layer (one full-precision layer in "
                                                 "memory): int8/int4 write a quantised checkpoint, none "
                                                 "full-precision shards")] = None,
) -> None:
    """Write a RANDOM-WEIGHT checkpoint of a catalog model (for tests and benchmarks)."""
    from feldspar.model.catalog import get_spec
    from feldspar.home import require_writable
    from feldspar.model.checkpoint_random import write_random_checkpoint

    spec = get_spec(name)
    existing = directory.expanduser().absolute()
    while not existing.exists() and existing != existing.parent:  # nothing is created before the checks below
        existing = existing.parent
    require_writable(existing, "output directory" if existing == directory.expanduser().absolute() else
                     "folder for the output", fix="choose a directory you can write")  # before any weights
    write_random_checkpoint(  # its progress lines end with "done: DIR (RANDOM WEIGHTS)"
        spec, directory, tiny=tiny, seed=seed, dtype=dtype,
        overwrite=force, allow_large=allow_large, progress=_say, quant=quant,
    )


def _say(message: str) -> None:
    console.print(message, markup=False, highlight=False, soft_wrap=True)  # a path stays on one line
