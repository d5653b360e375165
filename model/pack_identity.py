"""What a saved model state was made with, and the check that refuses it elsewhere.

A state pack or thread state records the model's weights fingerprint (its config plus samples
of a few parameters and of the quantised layers' scales), dtype, quantisation and torch /
transformers major.minor, and hashes of its token ids and file; ``check_compatible`` refuses a
state whose record differs from the running engine's, naming the fix. Knows models and files;
nothing of how states are written.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import torch

from feldspar.model.errors import StateError
from feldspar.model.quant import quant_name


def major_minor(version: str) -> str:
    return ".".join(version.split("+")[0].split(".")[:2])


def runtime_versions() -> dict[str, str]:
    import transformers

    return {"torch": major_minor(torch.__version__), "transformers": major_minor(transformers.__version__)}


def weights_fingerprint(model: torch.nn.Module) -> str:
    """Hash of the architecture config plus samples of a few parameter tensors (dtype-independent)
    and of quantised layers' scales (another quantisation of the same weights is another model)."""
    config = model.config.to_dict()
    for volatile in ("_name_or_path", "transformers_version", "torch_dtype", "dtype", "architectures"):
        config.pop(volatile, None)
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    scales = [(name, b) for name, b in model.named_buffers() if name.endswith((".scales", ".scales_zeros"))]
    for tensors in (list(model.named_parameters()), scales):
        for name, tensor in [tensors[0], tensors[len(tensors) // 2], tensors[-1]] if tensors else []:
            sample = tensor.detach().flatten()[:4096].to(device="cpu", dtype=torch.float32)
            digest.update(name.encode() + sample.numpy().tobytes())
    return digest.hexdigest()[:32]


def dtype_name(model: torch.nn.Module) -> str:
    return str(next(model.parameters()).dtype).removeprefix("torch.")


def file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def ids_sha256(ids: Sequence[int]) -> str:
    return hashlib.sha256(torch.tensor(list(ids), dtype=torch.int64).numpy().tobytes()).hexdigest()


def check_compatible(meta: dict[str, Any], engine) -> None:
    """Refuse a pack made with another model, dtype, quantisation or torch/transformers major.minor."""
    name = meta.get("name", "?")
    if meta.get("dtype") != dtype_name(engine.model):
        raise StateError(f"pack {name!r} was made in {meta.get('dtype')} but the model runs in {dtype_name(engine.model)}",
                         fix="pack_dtype", dtype=meta.get("dtype"))
    made_with, runs = meta.get("quant", "none"), quant_name(engine.model)
    if made_with != runs:
        raise StateError(f"pack {name!r} was made with {made_with} weights but the model runs {runs} weights",
                         fix="pack_quant", quant=made_with)
    for lib, version in runtime_versions().items():
        if meta.get(lib) != version:
            raise StateError(f"pack {name!r} was made with {lib} {meta.get(lib)}, this is {lib} {version}",
                             fix="recreate_pack", name=name)
    if meta.get("fingerprint") != weights_fingerprint(engine.model):
        raise StateError(f"pack {name!r} was made with model {meta.get('model')!r} (other weights); "
                         f"it cannot be used with {engine.name!r}", fix="pack_model", model_source=meta.get("model_source"))
