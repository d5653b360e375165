"""The fast prefill mixer (model/prefill_scan.py) equals transformers' reference forward.

On the tiny hybrid kinds (MoE hybrid and dense hybrid, fp32 and bf16), prefills of odd
lengths below and above the scan chunk (bf16: as close to the fp32 logits as the reference), continuations from a prefilled state and prefills
chunked across calls give the from-scratch logits, and leave every cache tensor (conv and
SSM states, attention keys/values) equal to what the reference forward leaves, also for a
cache recording its past (every conv column kept). The scan alone
equals the plain token-by-token SSM recurrence. FELDSPAR_PREFILL=ref, ``model.generate``-style
calls outside ``generation.forward`` and unsupported shapes run the reference.
"""

from __future__ import annotations

import copy

import pytest
import torch

from feldspar.model import prefill_scan
from feldspar.model.generation import ModelState, new_state, prefill
from feldspar.model.loader import load_checkpoint
from tests.model.test_decode_step import cache_tensors
from tests.model.logit_reference import assert_logits_close, assert_matches_scratch, logit_difference

HYBRIDS = ["tiny_checkpoint", "tiny_base_checkpoint"]
STATE_TOLERANCE = 1e-4
IDS = [(i * 37 + 11) % 250 + 3 for i in range(300)]


@pytest.fixture
def calls(monkeypatch):
    """How many mixer forwards the fast path served (the real function still runs)."""
    count = {"n": 0}
    real = prefill_scan.mixer_forward

    def counted(*args, **kwargs):
        count["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(prefill_scan, "mixer_forward", counted)
    return count


def load(request, fixture: str, dtype: str = "float32"):
    model, _tok, _resolved = load_checkpoint(str(request.getfixturevalue(fixture)), "cpu", dtype)
    return model


def run(model, monkeypatch, mode: str, pieces: list[list[int]], chunk_size: int = 1000):
    """Prefill ``pieces`` one after another with FELDSPAR_PREFILL=``mode``; (logits, state)."""
    monkeypatch.setenv("FELDSPAR_PREFILL", mode)
    state, logits = new_state(model), None
    for piece in pieces:
        logits = prefill(model, state, piece, chunk_size)
    return logits, state


def assert_states_equal(fast: ModelState, ref: ModelState, tolerance: float = STATE_TOLERANCE) -> None:
    got, want = cache_tensors(fast), cache_tensors(ref)
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.shape == b.shape and a.dtype == b.dtype, f"cache tensor {i}: {a.shape}/{a.dtype} vs {b.shape}/{b.dtype}"
        diff = (a.float() - b.float()).abs().max().item()
        assert diff <= tolerance, f"cache tensor {i} differs from the reference by {diff:.3g}"


@pytest.mark.parametrize("fixture", HYBRIDS)
@pytest.mark.parametrize("length", [2, 17, 64, 65, 150])
def test_one_prefill_matches_reference(request, monkeypatch, calls, fixture, length):
    model = load(request, fixture)
    ids = IDS[:length]
    ref_logits, ref = run(model, monkeypatch, "ref", [ids])
    assert calls["n"] == 0, "FELDSPAR_PREFILL=ref still ran the fast mixer"
    logits, fast = run(model, monkeypatch, "fast", [ids])
    assert calls["n"] > 0, "the fast mixer did not run"
    assert_matches_scratch(model, ids, logits, f"fast prefill of {length}")
    assert_logits_close(logits, ref_logits, "fast vs reference prefill")
    assert_states_equal(fast, ref)


@pytest.mark.parametrize("fixture", HYBRIDS)
def test_continuation_and_chunked_prefill(request, monkeypatch, calls, fixture):
    model = load(request, fixture)
    pieces = [IDS[:40], IDS[40:41], IDS[41:200], IDS[200:203]]
    ref_logits, ref = run(model, monkeypatch, "ref", pieces, chunk_size=37)
    logits, fast = run(model, monkeypatch, "fast", pieces, chunk_size=37)
    assert calls["n"] > 0
    assert fast.length == 203
    assert_matches_scratch(model, IDS[:203], logits, "fast chunked prefill")
    assert_logits_close(logits, ref_logits, "fast vs reference chunked prefill")
    assert_states_equal(fast, ref)


def test_a_cache_recording_its_past_keeps_every_conv_column(request, monkeypatch, calls):
    """With ``activate_past_recording`` (kept for a later ``crop``) the conv state holds every
    column, as the reference leaves it, not just the last ``kernel``."""
    model = load(request, "tiny_base_checkpoint")
    states = {}
    for mode in ("ref", "fast"):
        monkeypatch.setenv("FELDSPAR_PREFILL", mode)
        state = new_state(model)
        prefill(model, state, IDS[:40], 1000)
        for layer in state.cache.layers:
            if hasattr(layer, "activate_past_recording"):
                layer.activate_past_recording()
        states[mode] = (prefill(model, state, IDS[40:120], 1000), state)
    assert calls["n"] > 0
    conv = next(layer.conv_states[0] for layer in states["fast"][1].cache.layers if hasattr(layer, "conv_states"))
    assert conv.shape[-1] == 4 + 80, f"the recorded conv state has {conv.shape[-1]} columns"
    assert_logits_close(states["fast"][0], states["ref"][0], "fast vs reference, recording the past")
    assert_states_equal(states["fast"][1], states["ref"][1])


@pytest.mark.parametrize("fixture", HYBRIDS)
def test_bf16_matches_reference(request, monkeypatch, calls, fixture):
    model = load(request, fixture, "bfloat16")
    pieces = [IDS[:70], IDS[70:151]]
    ref_logits, ref = run(model, monkeypatch, "ref", pieces)
    logits, fast = run(model, monkeypatch, "fast", pieces)
    assert calls["n"] > 0
    # bf16 logits carry bf16's own rounding (~0.25 here, 2-4 ulps at these magnitudes), which any
    # fp32 reordering shifts: the fast path must stay as close to the fp32 logits as the reference
    fp32_logits, _ = run(load(request, fixture), monkeypatch, "ref", pieces)
    bf16_error = logit_difference(ref_logits, fp32_logits)
    assert_logits_close(logits, fp32_logits, "bf16 fast vs fp32 reference", tolerance=1.5 * bf16_error)
    assert_states_equal(fast, ref, tolerance=0.05)
    assert fast.cache.layers[0].recurrent_states[0].dtype == torch.float32


def sequential_scan(x, dt, A, B, C, state):
    """The SSM recurrence one token at a time: h = exp(dt*A) h + dt x Bᵀ, y = h C."""
    ys = []
    for t in range(x.shape[0]):
        decay = torch.exp(dt[t] * A)[:, None, None]
        state = state * decay + (dt[t][:, None, None] * x[t][:, :, None]) * B[t][None, None, :]
        ys.append(state @ C[t])
    return torch.stack(ys), state  # [T, H, P]


@pytest.mark.parametrize("length,chunk", [(1, 4), (11, 4), (16, 4), (13, 64)])
def test_scan_equals_the_recurrence(length, chunk):
    gen = torch.Generator().manual_seed(length)
    H, P, N = 3, 5, 7
    x = torch.randn(length, H, P, generator=gen)
    dt = torch.rand(length, H, generator=gen) * 2
    A = -torch.tensor([0.5, 3.0, 40.0])  # the last head decays below the floor within a chunk
    B, C = torch.randn(length, N, generator=gen), torch.randn(length, N, generator=gen)
    start = torch.randn(H, P, N, generator=gen)
    y, final = prefill_scan.ssd_scan(x, dt, A, B, C, start, chunk=chunk)
    want_y, want_final = sequential_scan(x, dt, A, B, C, start)
    torch.testing.assert_close(y, want_y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(final, want_final, rtol=1e-5, atol=1e-5)


def test_outside_generation_and_unsupported_shapes_run_the_reference(request, calls):
    model = load(request, "tiny_base_checkpoint")
    prefill_scan.install(model)
    ids = torch.tensor([IDS[:30], IDS[30:60]])
    with torch.inference_mode():
        plain = model(input_ids=ids, use_cache=False).logits
        with prefill_scan.active(model):
            batched = model(input_ids=ids, use_cache=True).logits  # batch 2: not supported
    assert calls["n"] == 0
    torch.testing.assert_close(batched, plain, rtol=1e-4, atol=1e-4)


def test_installed_model_survives_deepcopy(request, monkeypatch, calls):
    model = load(request, "tiny_checkpoint")
    logits, _ = run(model, monkeypatch, "fast", [IDS[:50]])
    twin = copy.deepcopy(model)
    assert all(isinstance(layer.mamba, prefill_scan._Dispatch)
               for layer in twin.model.layers if layer.mamba is not None)
    with torch.no_grad():
        twin.model.layers[0].mamba.out_proj.weight.mul_(2.0)  # the copy must use its own weights
    twin_logits, _ = run(twin, monkeypatch, "fast", [IDS[:50]])
    again, _ = run(model, monkeypatch, "fast", [IDS[:50]])
    assert_logits_close(again, logits, "original after deepcopy")
    assert (twin_logits - logits).abs().max().item() > 1e-3, "the copy ran the original's weights"
