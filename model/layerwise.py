"""Build, write and load a Granite model one piece at a time, so that a quantised model never
needs its full-precision weights in memory at once.

A model's pieces (``pieces``) are the embedding, each decoder layer and the final norm; the
tied LM head is made from the embedding. Every path starts from a meta-device skeleton and
materialises one piece, finishes it, and moves on:

* ``write_random`` — a random-weight checkpoint: each piece is drawn on the CPU from its own
  seed (``piece_seed(seed, index)``) with the init of ``presets.build_random_model`` (transformers'
  ``_init_weights``, then std 1/sqrt(fan_in) for weight matrices, the sensitive Mamba of the
  miniature), cast to the dtype, then either quantised (``quant.quantize_pieces``) into sharded
  ``quantized-NNNNN.safetensors`` plus ``quantized.safetensors.index.json`` that
  ``quant.load_quantized`` reads, or written in full precision as sharded ``model-NNNNN.safetensors``
  with a ``model.safetensors.index.json`` (checkpoint key names, as ``save_pretrained`` writes
  them) that transformers loads. The relation guaranteed: a quantised write equals, tensor for
  tensor, the full-precision write of the same seed and dtype quantised at load by ``load_quantizing``.
  The draws differ from ``build_random_model``'s one stream over the whole model (same
  distributions, other values).
* ``load_quantizing`` — a full-precision safetensors checkpoint quantised while it loads:
  peak memory is the quantised model plus one full-precision piece.

Knows torch, safetensors and transformers' Granite modules and key renamings; nothing of prompts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from feldspar.model import quant as quantization

SHARD_BYTES = 2 * 1024**3
FULL_INDEX, QUANT_INDEX = "model.safetensors.index.json", "quantized.safetensors.index.json"
Progress = Callable[[str], None]
PieceHook = Callable[[str, nn.Module], None]


def skeleton(config, dtype: torch.dtype) -> nn.Module:
    """The model on the meta device: shapes only, no memory."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, dtype=dtype)


def pieces(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(state-dict prefix, module) of the embedding, every decoder layer and the final norm."""
    yield "model.embed_tokens", model.model.embed_tokens
    for index, layer in enumerate(model.model.layers):
        yield f"model.layers.{index}", layer
    yield "model.norm", model.model.norm


def piece_seed(seed: int, index: int) -> int:
    return (seed * 1_000_003 + index) % 2**63


# ---- random pieces --------------------------------------------------------------------------
@torch.no_grad()
def randomise_piece(model: nn.Module, prefix: str, piece: nn.Module, seed: int, tiny: bool) -> None:
    """Materialise ``piece`` on the CPU in fp32 with random weights drawn from ``seed`` alone."""
    from feldspar.model.presets import sensitize_mixer, spread_parameters

    piece.to_empty(device="cpu").float()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in piece.modules():
            model._init_weights(module)
        spread_parameters((f"{prefix}.{name}", param) for name, param in piece.named_parameters())
        mixer = getattr(piece, "mamba", None)
        if tiny and mixer is not None:
            sensitize_mixer(mixer)


def release(piece: nn.Module) -> None:
    """Send a finished piece back to the meta device (its memory is freed)."""
    piece.to_empty(device="meta")


class ShardWriter:
    """Collects named tensors and writes ``stem-NNNNN.safetensors`` files of about SHARD_BYTES."""

    def __init__(self, out: Path, stem: str) -> None:
        self.out, self.stem = out, stem
        self.pending: dict[str, torch.Tensor] = {}
        self.weight_map: dict[str, str] = {}
        self.total = 0

    def add(self, tensors: dict[str, torch.Tensor]) -> None:
        for name, tensor in tensors.items():
            self.pending[name] = tensor.detach().contiguous().cpu().clone()
        if sum(t.numel() * t.element_size() for t in self.pending.values()) >= SHARD_BYTES:
            self.flush()

    def flush(self) -> None:
        from safetensors.torch import save_file

        if not self.pending:
            return
        name = f"{self.stem}-{len(set(self.weight_map.values())) + 1:05d}.safetensors"
        save_file(self.pending, str(self.out / name), metadata={"format": "pt"})
        self.total += sum(t.numel() * t.element_size() for t in self.pending.values())
        self.weight_map.update(dict.fromkeys(self.pending, name))
        self.pending = {}

    def finish(self, index_name: str) -> None:
        self.flush()
        index = {"metadata": {"total_size": self.total}, "weight_map": self.weight_map}
        (self.out / index_name).write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")


def write_random(config, out: Path, seed: int, dtype: torch.dtype, tiny: bool, mode: str,
                 group_size: int = 128, progress: Progress | None = None) -> nn.Module:
    """Write the weights of a random model piece by piece (``mode`` none|int8|int4); returns the
    meta skeleton (config and generation config for the caller to save)."""
    from transformers.core_model_loading import revert_weight_conversion

    say = progress or (lambda _msg: None)
    model = skeleton(config, dtype)
    quantised = mode != "none"
    writer = ShardWriter(out, "quantized" if quantised else "model")
    named = list(pieces(model))
    for index, (prefix, piece) in enumerate(named):
        say(f"layer {index + 1}/{len(named)}: {prefix}")
        randomise_piece(model, prefix, piece, piece_seed(seed, index), tiny)
        piece.to(dtype)
        if quantised:
            quantization.quantize_children(piece, mode, group_size)
            if prefix == "model.embed_tokens":
                writer.add(lm_head_tensors(model, mode, group_size))
        tensors = {f"{prefix}.{name}": t for name, t in piece.state_dict().items()}
        writer.add(tensors if quantised else revert_weight_conversion(model, tensors))
        release(piece)
    writer.finish(QUANT_INDEX if quantised else FULL_INDEX)
    if quantised:
        spec = quantization.checkpoint_spec(mode, group_size, str(dtype).removeprefix("torch."))
        (out / quantization.QUANT_FILE).write_text(json.dumps(spec), encoding="utf-8")
    return model


def lm_head_tensors(model: nn.Module, mode: str, group_size: int) -> dict[str, torch.Tensor]:
    """The quantised LM head, made from the (tied) embedding while it is materialised."""
    head = quantization.quantize_linear(model.model.embed_tokens.weight, None, mode, group_size)
    return {f"lm_head.{name}": t for name, t in head.state_dict().items()}


# ---- quantise while loading ---------------------------------------------------------------
def checkpoint_files(path: Path) -> list[Path] | None:
    """The full-precision safetensors files of a checkpoint directory (None: not safetensors)."""
    index = path / FULL_INDEX
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return [path / name for name in sorted(set(weight_map.values()))]
    single = path / "model.safetensors"
    return [single] if single.is_file() else None


def key_renamer(model: nn.Module) -> Callable[[str], str] | None:
    """Checkpoint key -> model state-dict key by transformers' renamings (None: the model
    needs a converting transform, which cannot run piece by piece)."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightRenaming, rename_source_key

    transforms = get_model_conversion_mapping(model)
    if any(not isinstance(t, WeightRenaming) for t in transforms):
        return None
    keys = dict.fromkeys(model.state_dict())
    return lambda key: rename_source_key(key, transforms, [], model.base_model_prefix, keys)[0]


def tensor_locations(files: list[Path], rename: Callable[[str], str]) -> dict[str, tuple[Path, str]]:
    """Model key -> (file, checkpoint key) for every tensor in ``files``."""
    from safetensors import safe_open

    found = {}
    for file in files:
        with safe_open(str(file), "pt") as handle:
            for key in handle.keys():
                found[rename(key)] = (file, key)
    return found


def read_piece(prefix: str, keys: list[str], where: dict[str, tuple[Path, str]], device: torch.device,
               dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The tensors of one piece (relative names), read file by file and cast to ``dtype``.
    Each file is opened only while it is read (``quant.read_owned``: copies, aligned), so its
    mapped pages leave the process after."""
    by_file: dict[Path, list[str]] = {}
    for key in keys:
        by_file.setdefault(where[key][0], []).append(key)
    tensors = {}
    for file, names in by_file.items():
        found = quantization.read_owned(file, device, [where[key][1] for key in names])
        for key in names:
            tensor = found.pop(where[key][1])
            tensors[key[len(prefix) + 1:]] = tensor.to(dtype) if tensor.is_floating_point() else tensor
    return tensors


@torch.no_grad()
def load_quantizing(path: Path, device: torch.device, dtype: torch.dtype, mode: str, group_size: int = 128,
                    on_piece: PieceHook | None = None) -> nn.Module | None:
    """Load a full-precision checkpoint quantised piece by piece (None: it cannot be, e.g. not
    safetensors; the caller loads it whole). ``on_piece(prefix, model)`` runs after each piece."""
    from transformers import AutoConfig

    files = checkpoint_files(path)
    if files is None:
        return None
    model = skeleton(AutoConfig.from_pretrained(path), dtype)
    rename = key_renamer(model)
    if rename is None:
        return None
    where = tensor_locations(files, rename)
    for prefix, piece in pieces(model):
        keys = [k for k in where if k.startswith(prefix + ".")]
        piece.load_state_dict(read_piece(prefix, keys, where, device, dtype), strict=True, assign=True)
        if prefix == "model.embed_tokens":
            model.lm_head = (quantization.quantize_linear(_head_weight(model, where, device, dtype), None,
                                                          mode, group_size))
        quantization.quantize_children(piece, mode, group_size)
        if on_piece is not None:
            on_piece(prefix, model)
    quantization.rebuild_nonpersistent(model, device)
    quantization.mark_quantized(model, mode, group_size)
    return model.eval()


def _head_weight(model: nn.Module, where: dict, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The LM head's weight: the embedding when tied, else its own tensor."""
    if model.config.tie_word_embeddings or "lm_head.weight" not in where:
        return model.model.embed_tokens.weight
    return read_piece("lm_head", ["lm_head.weight"], where, device, dtype)["weight"]
