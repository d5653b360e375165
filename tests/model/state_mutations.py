"""Bugs to inject into a hybrid model state, for sensitivity and mutation tests.

Each function returns a changed copy of a ``Snapshot`` (or a tensor) and never touches its
input: perturb every element of one part of the state by a relative ``fraction`` (signs drawn
from a fixed seed, so each element is off by exactly that fraction), zero a part, crop the
attention KV by one position, or swap the states of two Mamba layers. Knows the snapshot
layout of ``feldspar.model.snapshot``; nothing of caches, packs or files.
"""

from __future__ import annotations

import torch

from feldspar.model.snapshot import ATTENTION, MAMBA, LayerState, Snapshot

PARTS = ("ssm", "conv", "kv")


def off_by(tensor: torch.Tensor, fraction: float, seed: int = 0) -> torch.Tensor:
    """A copy with every element multiplied by 1 + fraction or 1 - fraction (random signs)."""
    generator = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, tensor.shape, generator=generator).to(tensor.device, tensor.dtype) * 2 - 1
    return tensor * (1 + fraction * signs)


def _change(tensor: torch.Tensor, how: str, fraction: float, seed: int) -> torch.Tensor:
    if how == "zero":
        return torch.zeros_like(tensor)
    if how == "perturb":
        return off_by(tensor, fraction, seed)
    raise ValueError(f"unknown change {how!r}")


def mutate_layer(layer: LayerState, part: str, how: str, fraction: float = 1e-3, seed: int = 0) -> LayerState:
    """One layer's state with ``part`` (ssm, conv or kv) zeroed or perturbed."""
    if layer.first is None:
        return layer
    if layer.kind == MAMBA and part == "conv":
        return LayerState(MAMBA, _change(layer.first, how, fraction, seed), layer.second)
    if layer.kind == MAMBA and part == "ssm":
        return LayerState(MAMBA, layer.first, _change(layer.second, how, fraction, seed))
    if layer.kind == ATTENTION and part == "kv":
        keys = _change(layer.first, how, fraction, seed)
        return LayerState(ATTENTION, keys, _change(layer.second, how, fraction, seed + 1))
    return layer


def mutate_snapshot(snapshot: Snapshot, part: str, how: str, fraction: float = 1e-3, seed: int = 0) -> Snapshot:
    """A copy of ``snapshot`` with ``part`` of every layer zeroed or perturbed (logits dropped)."""
    layers = [mutate_layer(layer, part, how, fraction, seed + 7 * index) for index, layer in enumerate(snapshot.layers)]
    return Snapshot(snapshot.length, layers)


def crop_kv(layer: LayerState, positions: int = 1) -> LayerState:
    """An attention layer's state without its last ``positions`` keys and values."""
    if layer.kind != ATTENTION or layer.first is None:
        return layer
    return LayerState(ATTENTION, layer.first[..., :-positions, :], layer.second[..., :-positions, :])


def swap_first_mamba_layers(layers: list[LayerState]) -> list[LayerState]:
    """The layer list with the states of the first two Mamba layers exchanged (same shapes)."""
    mamba = [index for index, layer in enumerate(layers) if layer.kind == MAMBA]
    swapped = list(layers)
    first, second = mamba[0], mamba[1]
    swapped[first], swapped[second] = layers[second], layers[first]
    return swapped
