"""fp32 prefill linears by oneDNN: the same function as F.linear, only where it is enabled, and a
model using it still prefills chunked and whole to the same logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from feldspar.model import onednn_linear
from feldspar.model.generation import new_state, prefill
from feldspar.model.loader import load_checkpoint
from feldspar.model.onednn_linear import ROWS, OneDnnLinear, available, use_onednn
from tests.model.logit_reference import assert_matches_scratch



def test_onednn_linear_is_there_and_agrees_with_f_linear():
    assert available()  # every x86 build of torch bundles oneDNN; elsewhere the feature stays off


@pytest.fixture
def enabled(monkeypatch):
    monkeypatch.setattr(onednn_linear, "ENABLED", True)


def test_a_onednn_linear_computes_f_linear_with_its_bias(enabled, monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(96, 80))
    assert use_onednn(model) == 1
    layer = model[0]
    assert type(layer) is OneDnnLinear
    for rows in (1, ROWS - 1, ROWS, 3 * ROWS):
        x = torch.randn(1, rows, 96)
        expected = F.linear(x, layer.weight, layer.bias)
        assert torch.allclose(layer(x), expected, rtol=1e-5, atol=1e-5)
    calls = []
    real = onednn_linear.onednn_linear
    monkeypatch.setattr(onednn_linear, "onednn_linear", lambda x, *rest: calls.append(x.shape) or real(x, *rest))
    layer(torch.randn(ROWS - 1, 96))
    layer(torch.randn(ROWS, 96))
    layer.to(torch.bfloat16)(torch.randn(ROWS, 96, dtype=torch.bfloat16))
    assert calls == [(ROWS, 96)]  # fp32 prefill rows only: not decode rows, not bf16


def test_nothing_changes_where_it_is_not_enabled(monkeypatch):
    monkeypatch.setattr(onednn_linear, "ENABLED", False)
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 4))
    assert use_onednn(model) == 0 and all(type(m) is nn.Linear for m in model)


def test_a_model_on_onednn_prefills_chunked_as_whole_and_quantises_as_before(enabled, tiny_checkpoint):
    model = load_checkpoint(str(tiny_checkpoint), "cpu", "float32")[0]
    use_onednn(model)
    assert any(type(m) is OneDnnLinear for m in model.modules())
    ids = [5 + i % 300 for i in range(ROWS + 40)]
    chunked = prefill(model, new_state(model), ids, chunk_size=32)  # MKL rows
    assert_matches_scratch(model, ids, chunked, "chunked (MKL) vs one oneDNN forward")
    from feldspar.model.quant import quantize
    quantize(model, "int8")
    assert not any(isinstance(m, nn.Linear) for m in model.modules())  # every OneDnnLinear was quantised
