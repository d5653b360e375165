"""Write random-weight Granite 4.0 checkpoints that load offline with transformers.

A checkpoint directory gets config.json, model.safetensors (sharded when large),
generation_config.json, the locally built tokenizer (with the Granite chat template for
instruct models, none for ``-base``), a README.md and the marker file ``feldspar_random.json``.
``is_random_checkpoint`` reads the marker so the app never passes random output off as an
answer.

It knows nothing about trained weights and never downloads; the weights are noise with the
right shapes, deterministic for a given seed and dtype. Miniatures (``tiny=True``) get the
sensitive init of ``model.presets`` so that state-reuse tests can fail.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from feldspar.model.catalog import ModelSpec, get_spec
from feldspar.model.errors import CheckpointError
from feldspar.model.names import RANDOM_MARKER_FILE
from feldspar.model.presets import build_random_model, count_params, resolve_dtype, tiny_spec

if TYPE_CHECKING:
    import torch

MARKER_FILE = RANDOM_MARKER_FILE
LARGE_BYTES = 8 * 1024**3  # refuse to write more than this unless allow_large
MAX_SHARD_SIZE = "2GB"
TINY_NOTE = (" (miniature, tiny=True: slow Mamba decay, sharp attention and logits scaled x32, so that"
             " an error in any part of the model state shows in the logits)")

_README = """# RANDOM WEIGHTS — not a trained model

This directory was written by `feldspar models random`. It has the exact architecture of
`{hub_id}`{tiny_note}, but every weight is random noise (seed {seed}, {dtype}).
Text it generates is meaningless. Use it for tests, benchmarks of speed and memory, and
offline development only. The marker file `{marker}` lets Feldspar recognise it.
"""


def is_random_checkpoint(path: str | Path) -> bool:
    """True when ``path`` is a checkpoint directory written by write_random_checkpoint."""
    marker = Path(path) / MARKER_FILE
    if not marker.is_file():
        return False
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True  # a damaged marker still says "random"; err on the safe side
    return not isinstance(data, dict) or data.get("random_weights", True) is not False


QUANT_BYTES_PER_PARAM = {"int8": 1.0, "int4": 0.5 + 4 / 128}  # int4: codes plus a scale and zero per group


def estimated_bytes(name: str | ModelSpec, tiny: bool = False, dtype: torch.dtype | str = "float32",
                    quant: str = "none") -> int:
    """Approximate size of the weights file(s) for a model in a dtype (and quantisation)."""
    torch_dtype = resolve_dtype(dtype)
    params = count_params(name, tiny=tiny)[0]
    return int(params * QUANT_BYTES_PER_PARAM.get(quant, torch_dtype.itemsize))


def _check_target(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise CheckpointError(f"{out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise CheckpointError(f"{out_dir} is not empty: choose an empty directory", fix="overwrite")


def _write_marker(out_dir: Path, spec: ModelSpec, tiny: bool, seed: int, dtype_name: str) -> None:
    total, active = count_params(spec, tiny=tiny)
    marker = {
        "random_weights": True,
        "warning": "RANDOM WEIGHTS: output of this model is meaningless",
        "model": spec.name,
        "hub_id": spec.hub_id,
        "tiny": tiny,
        "seed": seed,
        "dtype": dtype_name,
        "params": total,
        "active_params": active,
    }
    (out_dir / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    readme = _README.format(
        hub_id=spec.hub_id, tiny_note=TINY_NOTE if tiny else "",
        seed=seed, dtype=dtype_name, marker=MARKER_FILE,
    )
    (out_dir / "README.md").write_text(readme, encoding="utf-8")


def write_random_checkpoint(
    name: str | ModelSpec,
    out_dir: str | Path,
    tiny: bool = False,
    seed: int = 0,
    dtype: torch.dtype | str = "float32",
    chat_template: str | None = None,
    overwrite: bool = False,
    allow_large: bool = False,
    progress: Callable[[str], None] | None = None,
    quant: str | None = None,
) -> Path:
    """Write a random-weight checkpoint of catalog model ``name`` to ``out_dir``; return the dir.

    ``quant`` (none|int8|int4) builds it layer by layer on a meta-device skeleton
    (``model.layerwise``), so memory holds one full-precision layer at a time: int8/int4 write
    the quantised format ``quant.load_quantized`` reads, none full-precision shards. Without
    ``quant`` the whole model is built at once (``presets.build_random_model``; other draws).
    ``chat_template`` replaces the bundled Granite template (instruct models only).
    Raises ModelNotFoundError for unknown names and CheckpointError for a non-empty
    ``out_dir`` (unless ``overwrite``) or a checkpoint above 8 GiB (unless ``allow_large``).
    """
    say = progress or (lambda _msg: None)
    spec = name if isinstance(name, ModelSpec) else get_spec(name)
    torch_dtype = resolve_dtype(dtype)
    dtype_name = str(torch_dtype).removeprefix("torch.")
    out = Path(out_dir).expanduser()
    _check_target(out, overwrite)
    size = estimated_bytes(spec, tiny, torch_dtype, quant or "none")
    if size > LARGE_BYTES and not allow_large:
        raise CheckpointError(
            f"{spec.name} in {dtype_name} is about {size / 1024**3:.1f} GiB", fix="allow_large")
    out.mkdir(parents=True, exist_ok=True)
    if quant is None:
        say(f"building {spec.name}{' (tiny)' if tiny else ''} with random weights (seed {seed}, {dtype_name})")
        model = build_random_model(spec, tiny=tiny, device="cpu", dtype=torch_dtype, seed=seed)
        _set_generation_config(model)
        say(f"writing weights (~{size / 1024**2:.1f} MiB) to {out}")
        model.save_pretrained(out, max_shard_size=MAX_SHARD_SIZE)
        del model
    else:
        _write_layerwise(spec, out, tiny, seed, torch_dtype, quant, say)
        dtype_name = f"{dtype_name}, {quant}" if quant != "none" else dtype_name
    say("writing tokenizer")
    _tokenizer_for(spec, tiny, chat_template).save_pretrained(out)
    _write_marker(out, spec, tiny, seed, dtype_name)
    say(f"done: {out} (RANDOM WEIGHTS)")
    return out


def _write_layerwise(spec: ModelSpec, out: Path, tiny: bool, seed: int, dtype: torch.dtype, quant: str,
                     say: Callable[[str], None]) -> None:
    from transformers import GenerationConfig

    from feldspar.model.layerwise import write_random
    from feldspar.model.presets import granite_config

    say(f"building {spec.name}{' (tiny)' if tiny else ''} with random weights layer by layer "
        f"(seed {seed}, {str(dtype).removeprefix('torch.')}, quantisation {quant}) into {out}")
    config = granite_config(spec, tiny=tiny)
    config.dtype = dtype
    write_random(config, out, seed, dtype, tiny, quant, progress=say)
    config.save_pretrained(out)
    GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
                     pad_token_id=config.pad_token_id).save_pretrained(out)


def _set_generation_config(model) -> None:
    config = model.config
    generation = model.generation_config
    generation.bos_token_id = config.bos_token_id
    generation.eos_token_id = config.eos_token_id
    generation.pad_token_id = config.pad_token_id


def _tokenizer_for(spec: ModelSpec, tiny: bool, chat_template: str | None):
    from feldspar.model.tokenizer_build import build_tokenizer

    context = tiny_spec(spec).context if tiny else spec.context
    return build_tokenizer(
        "tiny" if tiny else "full",
        chat_template=chat_template,
        with_chat_template=not spec.base,
        model_max_length=context,
    )
