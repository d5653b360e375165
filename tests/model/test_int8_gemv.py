"""The one-row int8 kernel: ready where the CPU has AVX-512 VNNI or AVX2, exactly ``torch._int_mm``'s
integers for every shape and value, used for decode rows only, and a clean fallback to
``_int_mm`` when turned off or when its build fails."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from feldspar.model import int8_gemv
from feldspar.model.cpu import cpu_flags
from feldspar.model.quant import int8_dynamic_mm, quantize_int8, quantize_rows

VNNI = {"avx512f", "avx512bw", "avx512_vnni"} <= cpu_flags()
CAPABLE = VNNI or "avx2" in cpu_flags()  # the AVX-512 kernel, else the AVX2 one


@pytest.fixture
def ready(monkeypatch):
    monkeypatch.delenv(int8_gemv.ENV, raising=False)
    assert int8_gemv.prepare() is CAPABLE
    if not CAPABLE:  # nothing to run the kernel on: the fallback is what this CPU gets
        assert not int8_gemv.READY
        return False
    return True


def integer_product(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return x.to(torch.int64).matmul(w.to(torch.int64).t()).to(torch.int32)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), k=st.integers(1, 700), seed=st.integers(0, 2**31 - 1))
def test_the_kernel_gives_the_exact_integer_product(n, k, seed):
    if not int8_gemv.prepare():
        assert not CAPABLE
        return
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(-128, 128, (1, k), dtype=torch.int8, generator=gen)
    w = torch.randint(-128, 128, (n, k), dtype=torch.int8, generator=gen)
    x[0, seed % k] = -128  # the byte the unsigned trick has to get right
    w[seed % n, 0] = -128
    assert torch.equal(int8_gemv.gemv(x, w), integer_product(x, w))
    x = x.clamp(min=-127)  # as quantised activations are: the AVX2 kernel's sign trick takes these
    assert torch.equal(int8_gemv.gemv(x, w), integer_product(x, w))


def test_extreme_rows_and_strided_weights_are_exact(ready):
    if not ready:
        return
    k = 2048  # 2048 * 128 * 128 = 2**25: far past int16, well inside int32
    x = torch.full((1, k), -128, dtype=torch.int8)
    w = torch.full((3, k), -128, dtype=torch.int8)
    w[1], w[2] = 127, torch.arange(k) % 256 - 128
    assert torch.equal(int8_gemv.gemv(x, w), integer_product(x, w))
    for value in (-127, 127):  # |w| = 128 against |x| = 127: pairs of 2 * 128 * 127, just inside int16
        assert torch.equal(int8_gemv.gemv(torch.full((1, k), value, dtype=torch.int8), w),
                           integer_product(torch.full((1, k), value, dtype=torch.int8), w))
    wide = torch.randint(-128, 128, (40, 2 * k), dtype=torch.int8)
    strided = wide[:, ::2]  # not contiguous: the op copies, the answer stays exact
    assert torch.equal(int8_gemv.gemv(x, strided), torch._int_mm(x, strided.t().contiguous()))


def test_bad_shapes_are_one_clear_error(ready):
    if not ready:
        return
    with pytest.raises(RuntimeError, match="x must be int8 \\[1, K\\]"):
        int8_gemv.gemv(torch.zeros(2, 8, dtype=torch.int8), torch.zeros(4, 8, dtype=torch.int8))
    with pytest.raises(RuntimeError, match="w must be int8 \\[N, K\\]"):
        int8_gemv.gemv(torch.zeros(1, 8, dtype=torch.int8), torch.zeros(4, 9, dtype=torch.int8))


def test_decode_rows_use_the_kernel_and_agree_with_the_rows_of_a_prefill(ready, monkeypatch):
    torch.manual_seed(5)
    x, weight = torch.randn(19, 200), torch.randn(70, 200)
    q, scales = quantize_int8(weight)
    prefill_rows = int8_dynamic_mm(x, q, scales)  # _int_mm, many rows
    calls = []
    real = int8_gemv.gemv_f32
    monkeypatch.setattr(int8_gemv, "gemv_f32", lambda *a: calls.append(a[0].shape) or real(*a))
    one_by_one = torch.cat([int8_dynamic_mm(x[i:i + 1], q, scales) for i in range(19)])
    assert torch.equal(one_by_one, prefill_rows)  # bit for bit: decode after prefill is exact reuse
    assert calls == ([(1, 200)] * 19 if ready else [])


def test_bf16_decode_rows_quantise_outside_and_use_the_integer_kernel(ready, monkeypatch):
    torch.manual_seed(6)
    x, weight = torch.randn(3, 96).bfloat16(), torch.randn(40, 96).bfloat16()
    q, scales = quantize_int8(weight)
    calls = []
    real = int8_gemv.gemv
    monkeypatch.setattr(int8_gemv, "gemv", lambda *a: calls.append(a[0].dtype) or real(*a))
    rows = torch.cat([int8_dynamic_mm(x[i:i + 1], q, scales.bfloat16()) for i in range(3)])
    assert rows.dtype == torch.bfloat16 and torch.equal(rows, int8_dynamic_mm(x, q, scales.bfloat16()))
    assert calls == ([torch.int8] * 3 if ready else [])


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), k=st.integers(1, 700), seed=st.integers(0, 2**31 - 1), tiny=st.booleans())
def test_the_fp32_op_is_the_quantised_product_bit_for_bit(n, k, seed, tiny):
    """int8_gemv_f32 = quantize_rows, the integer product and the two scales, exactly (any K,
    a row of zeros or of tiny numbers included)."""
    if not int8_gemv.prepare():
        assert not CAPABLE
        return
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, k, generator=gen) * (1e-30 if tiny else 3.0)
    if seed % 7 == 0:
        x.zero_()
    w = torch.randint(-128, 128, (n, k), dtype=torch.int8, generator=gen)
    scales = torch.rand(n, generator=gen) + 1e-3
    codes, row_scale = quantize_rows(x)
    expected = integer_product(codes, w) * (row_scale * scales)
    assert torch.equal(int8_gemv.gemv_f32(x, w, scales), expected)


def test_the_fp32_op_refuses_bad_inputs_in_one_clear_error(ready):
    if not ready:
        return
    w = torch.zeros(4, 8, dtype=torch.int8)
    with pytest.raises(RuntimeError, match="x must be fp32 \\[1, K\\]"):
        int8_gemv.gemv_f32(torch.zeros(1, 8).bfloat16(), w, torch.ones(4))
    with pytest.raises(RuntimeError, match="w must be int8 \\[N, K\\]"):
        int8_gemv.gemv_f32(torch.zeros(1, 9), w, torch.ones(4))
    with pytest.raises(RuntimeError, match="scales must be fp32 \\[N\\]"):
        int8_gemv.gemv_f32(torch.zeros(1, 8), w, torch.ones(3))


def test_turned_off_it_is_not_used(monkeypatch):
    monkeypatch.setenv(int8_gemv.ENV, "off")
    assert int8_gemv.prepare() is False and int8_gemv.READY is False
    assert "by ATen's _int_mm" in int8_gemv.describe()
    monkeypatch.delenv(int8_gemv.ENV)
    assert int8_gemv.prepare() is CAPABLE
    expected = "Feldspar's AVX-512 VNNI kernel" if VNNI else "Feldspar's AVX2 kernel" if CAPABLE else "no AVX-512"
    assert expected in int8_gemv.describe()


FAILED_BUILD = """
import warnings, torch
from feldspar.model import int8_gemv
from feldspar.model.quant import int8_dynamic_mm, quantize_int8
int8_gemv.SOURCE = int8_gemv.AVX2_SOURCE = int8_gemv.Path({source!r})
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    assert int8_gemv.prepare() is False and int8_gemv.READY is False
lines = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
assert len(lines) == 1 and "torch._int_mm does every int8 matmul" in lines[0] and "\\n" not in lines[0], lines
q, scales = quantize_int8(torch.randn(16, 64))
x = torch.randn(1, 64)
assert torch.equal(int8_dynamic_mm(x, q, scales), int8_dynamic_mm(torch.cat([x, x]), q, scales)[:1])
print("fell back")
"""


def test_a_failed_build_warns_once_and_leaves_int_mm_in_charge(ready, tmp_path):
    if not ready:
        return
    broken = tmp_path / "int8_gemv.cpp"
    broken.write_text("this is not C++\n", encoding="utf-8")
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path / "ext")}  # a fresh process and build place
    done = subprocess.run([sys.executable, "-c", FAILED_BUILD.format(source=str(broken))], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "fell back" in done.stdout, done.stderr[-2000:]
    assert "building the int8 decode kernel" in done.stderr and "Traceback" not in done.stderr


def test_a_lock_left_by_a_killed_build_is_cleared_and_a_fresh_one_kept(tmp_path):
    lock = tmp_path / "lock"
    lock.write_text("", encoding="utf-8")
    assert int8_gemv.clear_stale_lock(tmp_path) is False and lock.exists()  # a build may be running
    old = time.time() - int8_gemv.STALE_LOCK_S - 5
    os.utime(lock, (old, old))
    assert int8_gemv.clear_stale_lock(tmp_path) is True and not lock.exists()
    assert int8_gemv.clear_stale_lock(tmp_path) is False  # nothing there: nothing to do


def test_every_way_of_loading_an_int8_model_gets_the_kernel_ready(tiny_checkpoint, tmp_path, monkeypatch):
    from feldspar.model.loader import load_checkpoint
    from feldspar.model.quant import save_quantized

    monkeypatch.delenv(int8_gemv.ENV, raising=False)
    prepared = []
    real = int8_gemv.prepare
    monkeypatch.setattr(int8_gemv, "prepare", lambda: prepared.append(1) or real())
    model, tokenizer, _ = load_checkpoint(str(tiny_checkpoint), "cpu", "float32", "int8")  # piece by piece
    save_quantized(model, tokenizer, tmp_path / "saved")
    load_checkpoint(str(tmp_path / "saved"), "cpu", "auto", "auto")  # a saved quantised checkpoint
    assert len(prepared) == 2 and int8_gemv.READY is CAPABLE
