"""Snapshot and restore a hybrid model state (Mamba2 conv + SSM states, attention KV).

A ``Snapshot`` is an immutable copy of a ``ModelState`` at one exact position: for each
Mamba layer its convolution window and SSM state (cloned, because transformers updates
them in place), for each attention layer its keys and values. ``restore`` hands back a
NEW ``ModelState`` whose Mamba tensors are fresh copies, so generating from it never
touches the snapshot.

Attention KV is never written in place: transformers' ``DynamicLayer`` grows keys and
values by concatenation (a new tensor every forward), and the decode step writes only into
room behind views of a buffer that the layer alone owns (``decode_step.append_kv``). So a
snapshot holds the very tensors a state had (made contiguous when they are such views) and
a restored state starts from them; the decode step gives a restored layer a buffer of its
own. ``restore`` checks that every attention layer is exactly a ``DynamicLayer`` and refuses
otherwise. ``share_kv_prefix`` lets a shorter snapshot of the same lineage
hold views into a longer one's KV (attention KV can be sliced; Mamba state cannot).

Also: sizes in bytes (counting shared storage once), the fixed-size part of a model's
state computed from its config, and conversion to/from a flat dict of tensors for
safetensors. Knows transformers' cache layer classes; nothing of token ids, prefixes,
files or eviction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer, LinearAttentionLayer

from feldspar.model.errors import StateError
from feldspar.model.generation import ModelState

MAMBA, ATTENTION = "mamba", "attention"


@dataclass(frozen=True)
class LayerState:
    """One layer's saved tensors: (conv, ssm) for Mamba, (keys, values) for attention.

    ``first``/``second`` are None for an attention layer that has seen no tokens.
    """

    kind: str
    first: torch.Tensor | None
    second: torch.Tensor | None

    def tensors(self) -> list[torch.Tensor]:
        return [t for t in (self.first, self.second) if t is not None]


@dataclass
class Snapshot:
    """A model state after exactly ``length`` tokens; ``logits`` are the next-token logits if known."""

    length: int
    layers: list[LayerState]
    logits: torch.Tensor | None = field(default=None, repr=False)

    def tensors(self) -> list[torch.Tensor]:
        found = [t for layer in self.layers for t in layer.tensors()]
        return found + ([self.logits] if self.logits is not None else [])

    @property
    def nbytes(self) -> int:
        """Bytes held by this snapshot alone (storage shared with others counted once)."""
        return storage_bytes(self.tensors())

    @property
    def dtype(self) -> torch.dtype | None:
        for layer in self.layers:
            if layer.first is not None:
                return layer.first.dtype
        return None


def storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views of one storage count once)."""
    seen: dict[int, int] = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def _snapshot_layer(layer) -> LayerState:
    if isinstance(layer, LinearAttentionLayer):
        if not layer.is_conv_states_initialized[0]:
            return LayerState(MAMBA, None, None)
        return LayerState(MAMBA, layer.conv_states[0].clone(), layer.recurrent_states[0].clone())
    if type(layer) is DynamicLayer:
        if not layer.is_initialized:
            return LayerState(ATTENTION, None, None)
        # a decoded layer's tensors are views of a buffer with room (decode_step.append_kv):
        # keep just the tokens, contiguous (what packs write and budgets count)
        return LayerState(ATTENTION, layer.keys.contiguous(), layer.values.contiguous())
    raise StateError(f"cannot snapshot a {type(layer).__name__} cache layer; Feldspar supports Mamba2 + full attention")


@torch.inference_mode()
def take_snapshot(state: ModelState, logits: torch.Tensor | None = None) -> Snapshot:
    """Copy ``state`` at its current length; later forwards on ``state`` leave the copy unchanged."""
    layers = [_snapshot_layer(layer) for layer in state.cache.layers]
    kept = logits.detach().clone() if logits is not None else None
    return Snapshot(length=state.length, layers=layers, logits=kept)


def _restore_mamba(layer: LinearAttentionLayer, saved: LayerState) -> None:
    if saved.first is None:
        return
    conv, ssm = saved.first.clone(), saved.second.clone()
    layer.conv_states[0], layer.recurrent_states[0] = conv, ssm
    layer.conv_kernel_size[0] = conv.shape[-1]
    layer.is_conv_states_initialized[0] = layer.is_recurrent_states_initialized[0] = True
    layer.has_previous_state[0] = True
    layer.dtype, layer.device = conv.dtype, conv.device


def _restore_attention(layer: DynamicLayer, saved: LayerState) -> None:
    if saved.first is None:
        return
    layer.keys, layer.values = saved.first, saved.second
    layer.dtype, layer.device = saved.first.dtype, saved.first.device
    layer.is_initialized = True


def _check_layer(index: int, layer, saved: LayerState) -> None:
    expected = MAMBA if isinstance(layer, LinearAttentionLayer) else ATTENTION
    if saved.kind != expected:
        raise StateError(f"saved state has a {saved.kind} layer at {index} where the model has {expected}")
    if expected == ATTENTION and type(layer) is not DynamicLayer:
        raise StateError(f"cannot restore into a {type(layer).__name__} cache layer (needs DynamicLayer)")


@torch.inference_mode()
def restore(snapshot: Snapshot, model: torch.nn.Module) -> ModelState:
    """A new ``ModelState`` equal to the snapshot; generating from it never mutates the snapshot."""
    cache = DynamicCache(config=model.config)
    if len(cache.layers) != len(snapshot.layers):
        raise StateError(f"saved state has {len(snapshot.layers)} layers, the model has {len(cache.layers)}")
    for index, (layer, saved) in enumerate(zip(cache.layers, snapshot.layers)):
        _check_layer(index, layer, saved)
        if saved.kind == MAMBA:
            _restore_mamba(layer, saved)
        else:
            _restore_attention(layer, saved)
    return ModelState(cache=cache, length=snapshot.length)


def share_kv_prefix(shorter: Snapshot, longer: Snapshot) -> None:
    """Make ``shorter`` hold views of ``longer``'s KV (same lineage: identical first tokens).

    Only the attention tensors change, and only to equal values stored in shared memory;
    the caller guarantees both snapshots come from one chain of forwards.
    """
    if shorter.length > longer.length:
        raise ValueError("share_kv_prefix needs the shorter snapshot first")
    for index, (short, long) in enumerate(zip(shorter.layers, longer.layers)):
        if short.kind != ATTENTION or short.first is None or long.first is None:
            continue
        keys = long.first[..., : shorter.length, :]
        values = long.second[..., : shorter.length, :]
        shorter.layers[index] = LayerState(ATTENTION, keys, values)


def detach_kv(snapshot: Snapshot) -> None:
    """Give ``snapshot`` its own compact copy of any KV that is a view into a larger storage."""
    for index, layer in enumerate(snapshot.layers):
        if layer.kind != ATTENTION or layer.first is None:
            continue
        if storage_bytes([layer.first]) > layer.first.nbytes:
            snapshot.layers[index] = LayerState(ATTENTION, layer.first.clone(), layer.second.clone())


# ---- sizes from the config (before any compute) ----------------------------------------
def _dtype_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def state_bytes(config, dtype: torch.dtype, tokens: int) -> int:
    """Bytes of a full model state after ``tokens`` tokens (Mamba fixed part + attention KV)."""
    return mamba_bytes(config, dtype) + kv_bytes_per_token(config, dtype) * tokens


def _config_kinds(config) -> list[str]:
    """``mamba``/``attention`` per layer from a config (older and newer layer type names)."""
    names = list(getattr(config, "layer_types", None) or [ATTENTION] * config.num_hidden_layers)
    return [MAMBA if kind in (MAMBA, "linear_attention") else ATTENTION for kind in names]


def mamba_bytes(config, dtype: torch.dtype) -> int:
    n_mamba = _config_kinds(config).count(MAMBA)
    if n_mamba == 0:
        return 0
    intermediate = config.mamba_n_heads * config.mamba_d_head
    conv_dim = intermediate + 2 * config.mamba_n_groups * config.mamba_d_state
    ssm = config.mamba_n_heads * config.mamba_d_head * config.mamba_d_state
    return n_mamba * (conv_dim * config.mamba_d_conv + ssm) * _dtype_size(dtype)


def kv_bytes_per_token(config, dtype: torch.dtype) -> int:
    n_attention = _config_kinds(config).count(ATTENTION)
    head_dim = config.hidden_size // config.num_attention_heads
    return n_attention * 2 * config.num_key_value_heads * head_dim * _dtype_size(dtype)


# ---- flat tensors for safetensors ------------------------------------------------------
def to_tensors(snapshot: Snapshot) -> dict[str, torch.Tensor]:
    """A flat name -> contiguous tensor dict (KV views become compact copies)."""
    flat: dict[str, torch.Tensor] = {}
    for index, layer in enumerate(snapshot.layers):
        names = ("conv", "ssm") if layer.kind == MAMBA else ("keys", "values")
        for name, tensor in zip(names, (layer.first, layer.second)):
            if tensor is not None:
                flat[f"layers.{index}.{layer.kind}.{name}"] = tensor.contiguous().clone()
    if snapshot.logits is not None:
        flat["logits"] = snapshot.logits.contiguous()
    return flat


def from_tensors(flat: dict[str, torch.Tensor], length: int, layer_kinds: list[str]) -> Snapshot:
    """Inverse of ``to_tensors`` for a model whose layers are ``layer_kinds``."""
    layers = []
    for index, kind in enumerate(layer_kinds):
        names = ("conv", "ssm") if kind == MAMBA else ("keys", "values")
        first, second = (flat.get(f"layers.{index}.{kind}.{name}") for name in names)
        if (first is None) != (second is None):
            raise StateError(f"saved state is missing half of layer {index}")
        if kind == ATTENTION and first is not None and first.shape[-2] != length:
            raise StateError(f"saved KV of layer {index} covers {first.shape[-2]} tokens, expected {length}")
        layers.append(LayerState(kind, first, second))
    known = {f"layers.{i}.{k}." for i, k in enumerate(layer_kinds)}
    stray = [name for name in flat if name != "logits" and not any(name.startswith(p) for p in known)]
    if stray:
        raise StateError(f"saved state has tensors this model does not have: {', '.join(sorted(stray)[:3])}")
    return Snapshot(length=length, layers=layers, logits=flat.get("logits"))


def layer_kinds(model: torch.nn.Module) -> list[str]:
    """``mamba`` / ``attention`` per layer, as the model's cache lays them out."""
    cache = DynamicCache(config=model.config)
    return [MAMBA if isinstance(layer, LinearAttentionLayer) else ATTENTION for layer in cache.layers]


def check_shapes(snapshot: Snapshot, config) -> None:
    """Refuse a snapshot whose tensors do not have this model's state shapes."""
    conv_dim = config.mamba_n_heads * config.mamba_d_head + 2 * config.mamba_n_groups * config.mamba_d_state
    head_dim = config.hidden_size // config.num_attention_heads
    for index, layer in enumerate(snapshot.layers):
        if layer.first is None:
            continue
        if layer.kind == MAMBA:
            expected = [(1, conv_dim, config.mamba_d_conv),
                        (1, config.mamba_n_heads, config.mamba_d_head, config.mamba_d_state)]
        else:
            expected = [(1, config.num_key_value_heads, snapshot.length, head_dim)] * 2
        found = [tuple(layer.first.shape), tuple(layer.second.shape)]
        if found != expected:
            raise StateError(f"saved state layer {index} has shapes {found}, this model needs {expected}")
