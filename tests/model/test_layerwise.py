"""Layer-by-layer random checkpoints and loading: the quantised write equals the full-precision
write quantised at load, and loading never holds full-precision linear weights beyond one layer."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM

from feldspar.model.checkpoint_random import is_random_checkpoint, write_random_checkpoint
from feldspar.model.layerwise import load_quantizing, pieces
from feldspar.model.loader import load_checkpoint
from feldspar.model.presets import build_random_model
from feldspar.model.int4 import Int4Linear
from feldspar.model.quant import INDEX_FILE, Int8Linear, QuantExperts

IDS = list(range(5, 70))


@pytest.fixture(scope="module")
def layerwise_dirs(tmp_path_factory):
    """The tiny MoE hybrid written layer by layer: full precision, int8 and int4 (seed 3, bf16)."""
    root = tmp_path_factory.mktemp("layerwise")
    return {q: write_random_checkpoint("h-tiny", root / q, tiny=True, seed=3, dtype="bfloat16", quant=q)
            for q in ("none", "int8", "int4")}


def logits(model, ids=IDS) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float()


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_a_layerwise_quantised_checkpoint_equals_the_full_precision_one_quantised_at_load(layerwise_dirs, mode):
    saved, _, _ = load_checkpoint(str(layerwise_dirs[mode]), "cpu")
    at_load, _, _ = load_checkpoint(str(layerwise_dirs["none"]), "cpu", "bfloat16", mode)
    assert (layerwise_dirs[mode] / INDEX_FILE).is_file() and is_random_checkpoint(layerwise_dirs[mode])
    assert saved.feldspar_choice["quant"] == at_load.feldspar_choice["quant"] == mode
    ours, theirs = saved.state_dict(), at_load.state_dict()
    assert ours.keys() == theirs.keys()
    unequal = [k for k in ours if ours[k].dtype != theirs[k].dtype or not torch.equal(ours[k], theirs[k])]
    assert unequal == []
    assert torch.equal(logits(saved), logits(at_load))
    kinds = {type(m) for m in saved.modules()}
    assert not any(isinstance(m, nn.Linear) for m in saved.modules())
    assert QuantExperts in kinds and (Int4Linear if mode == "int4" else Int8Linear) in kinds


def test_a_layerwise_full_precision_checkpoint_loads_in_transformers_with_the_old_init(layerwise_dirs):
    model = AutoModelForCausalLM.from_pretrained(layerwise_dirs["none"], dtype=torch.float32)
    old = build_random_model("h-tiny", tiny=True, seed=3)
    ours, theirs = model.state_dict(), old.state_dict()
    assert ours.keys() == theirs.keys()
    for name, tensor in theirs.items():
        drawn = tensor.dim() >= 2 or "conv1d.weight" in name
        if drawn:  # random draws: other values, the same spread (bf16 rounding aside)
            assert ours[name].std().item() == pytest.approx(tensor.std().item(), rel=0.15), name
        else:  # norms, A_log, D, dt_bias, conv bias: the same init values
            assert torch.equal(ours[name], tensor.to(torch.bfloat16).float()), name
    assert not torch.equal(logits(model)[0], logits(model)[1])  # a working model


def registered_tensors():
    """Every parameter or buffer registered on any module while the context is open."""
    seen = []

    def record(module, name, tensor):
        if tensor is not None:
            seen.append((type(module).__name__, name, tensor.dtype, tensor.device.type, tuple(tensor.shape)))

    return seen, record


def full_precision_linears(model: nn.Module) -> list[str]:
    """Names of materialised floating weights of linear layers or fused experts."""
    found = []
    for name, module in model.named_modules():
        tensors = ([module.weight] if isinstance(module, nn.Linear) else
                   [module.gate_up_proj, module.down_proj] if hasattr(module, "gate_up_proj") else [])
        found += [name for t in tensors if not t.is_meta and t.is_floating_point()]
    return found


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_loading_a_quantised_checkpoint_never_registers_a_full_precision_linear_weight(layerwise_dirs, mode):
    seen, record = registered_tensors()
    handles = [nn.modules.module.register_module_parameter_registration_hook(record),
               nn.modules.module.register_module_buffer_registration_hook(record)]
    try:
        model, _, _ = load_checkpoint(str(layerwise_dirs[mode]), "cpu")
    finally:
        for handle in handles:
            handle.remove()
    materialised = [s for s in seen if s[3] != "meta"]
    assert materialised, "the hooks saw the quantised tensors arrive"
    assert any(s[2] in (torch.int8, torch.uint8) for s in materialised)
    float_matrices = {(kind, name) for kind, name, dtype, _, shape in materialised
                      if dtype.is_floating_point and len(shape) >= 2 and name != "scales_zeros"}
    # the embedding, depthwise conv and the small expert router ([experts, hidden]) stay full precision
    assert float_matrices <= {("Embedding", "weight"), ("Conv1d", "weight"), ("GraniteMoeHybridTopKRouter", "weight")}
    assert full_precision_linears(model) == []


def test_quantising_at_load_holds_at_most_one_full_precision_layer(layerwise_dirs):
    steps = []

    def check(prefix, model):
        later = [i for i, layer in enumerate(model.model.layers) if all(p.is_meta for p in layer.parameters())]
        steps.append((prefix, full_precision_linears(model), later))

    model = load_quantizing(layerwise_dirs["none"], torch.device("cpu"), torch.bfloat16, "int8", on_piece=check)
    layers = len(model.model.layers)
    assert [s[0] for s in steps] == ["model.embed_tokens", *(f"model.layers.{i}" for i in range(layers)), "model.norm"]
    assert all(s[1] == [] for s in steps)  # each layer is quantised before the next is read
    assert [s[2] for s in steps] == [list(range(i, layers)) for i in range(layers + 1)] + [[]]  # the rest: meta
    assert full_precision_linears(model) == [] and not any(p.is_meta for p in model.parameters())
