"""The prefill scan under ``torch.compile`` (``prefill_scan.set_compiled``): the eager numbers, clean fallback.

With inductor, the compiled chunk scan equals the token-by-token SSM recurrence for lengths
of whole chunks plus a remainder, below one chunk and of one token, and a tiny hybrid model's
compiled prefill gives the eager prefill's logits and states, with no fallback warning. A
backend that fails to compile costs one warning and the eager scan, with the same numbers.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from feldspar.model import prefill_scan
from feldspar.model.generation import new_state, prefill
from feldspar.model.loader import load_checkpoint
from tests.model.test_decode_step import cache_tensors
from tests.model.test_prefill_scan import IDS, sequential_scan


pytestmark = pytest.mark.usefixtures("eager_after")  # tests/model/conftest.py


def problem(length: int):
    gen = torch.Generator().manual_seed(length)
    H, P, N = 3, 5, 7
    return (torch.randn(length, H, P, generator=gen), torch.rand(length, H, generator=gen) * 2,
            -torch.tensor([0.5, 3.0, 40.0]), torch.randn(length, N, generator=gen),
            torch.randn(length, N, generator=gen), torch.randn(H, P, N, generator=gen))


def test_the_compiled_scan_equals_the_recurrence() -> None:
    prefill_scan.set_compiled(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback would warn: fail instead
        for length in (19, 3, 1):  # 4 whole chunks + 3, less than a chunk, one token
            args = problem(length)
            y, final = prefill_scan.ssd_scan(*args, chunk=4)
            want_y, want_final = sequential_scan(*args)
            torch.testing.assert_close(y, want_y, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(final, want_final, rtol=1e-5, atol=1e-5)
    assert prefill_scan.compiled()


def test_a_compiled_prefill_gives_the_eager_logits_and_states(tiny_base_checkpoint) -> None:
    model = load_checkpoint(str(tiny_base_checkpoint), "cpu", "float32")[0]
    eager = new_state(model)
    eager_logits = prefill(model, eager, IDS[:150], chunk_size=100)
    prefill_scan.set_compiled(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        compiled = new_state(model)
        logits = prefill(model, compiled, IDS[:150], chunk_size=100)
    assert prefill_scan.compiled()
    torch.testing.assert_close(logits, eager_logits, rtol=1e-4, atol=1e-4)
    for got, want in zip(cache_tensors(compiled), cache_tensors(eager)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def refuse(graph, example_inputs):
    raise RuntimeError("this backend compiles nothing")


def test_a_failed_compile_warns_once_and_scans_eagerly() -> None:
    args = problem(9)
    want = prefill_scan.ssd_scan(*args, chunk=4)
    prefill_scan.set_compiled(True, backend=refuse)
    with pytest.warns(RuntimeWarning, match="torch.compile of the prefill scan failed") as caught:
        got = prefill_scan.ssd_scan(*args, chunk=4)
        again = prefill_scan.ssd_scan(*args, chunk=4)
    assert len([w for w in caught if "prefill scan" in str(w.message)]) == 1
    assert not prefill_scan.compiled()
    for result in (got, again):
        torch.testing.assert_close(result, want, rtol=0, atol=0)
