"""Fixtures of the model tests that compile: each starts from dynamo's empty caches and leaves
the decode step and the prefill scan eager, as every other test expects."""

from __future__ import annotations

import pytest
import torch

from feldspar.model import decode_step, prefill_scan


@pytest.fixture
def eager_after():
    torch._dynamo.reset()
    yield
    decode_step.set_compiled(False)
    prefill_scan.set_compiled(False)
    torch._dynamo.reset()
