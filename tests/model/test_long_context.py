"""Long-context prefill through the prefix cache: progress, interval snapshots, exact reuse.

A 16K-token context on the tiny model (the 128K run lives in `feldspar bench reuse`,
which takes minutes on two cores); reused logits are compared with one uncached forward
of the same ids. The chunk-bounding rule is checked as a pure function
at 128K.
"""

from __future__ import annotations

import torch
import pytest

from feldspar.model.state_cache import ATTENTION_ELEMENTS, MIN_CHUNK, PrefixStateCache, bounded_segments

from tests.model.logit_reference import assert_matches_scratch

CONTEXT = 16384
CHUNK = 2048


@pytest.fixture(scope="module")
def model(tiny_model):
    return tiny_model


def random_ids(model, count: int, seed: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.config.vocab_size - 64, (count,), generator=generator).tolist()


def test_chunks_shrink_with_context_so_attention_work_per_forward_is_bounded():
    segments = bounded_segments(0, 131072, 2048)
    assert segments[-1][0] == 131072
    chunks = [chunk for _, chunk in segments]
    assert chunks == sorted(chunks, reverse=True) and chunks[0] == 2048 and chunks[-1] == 512
    starts = [0] + [end for end, _ in segments[:-1]]
    for start, chunk in zip(starts, chunks):
        assert chunk & (chunk - 1) == 0 and MIN_CHUNK <= chunk
        assert chunk == MIN_CHUNK or chunk * start <= ATTENTION_ELEMENTS


def test_a_16k_context_is_prefilled_with_progress_and_reused_exactly(model):
    context, question = random_ids(model, CONTEXT, 1), random_ids(model, 20, 2)
    cache, progress = PrefixStateCache(budget_bytes=1 << 31, snapshot_interval=4096), []
    first = cache.prepare(model, context, chunk_size=CHUNK, progress=lambda done, total: progress.append((done, total)))
    assert first.computed_tokens == CONTEXT and progress[-1] == (CONTEXT, CONTEXT) and len(progress) >= CONTEXT // CHUNK
    assert cache.snapshot_lengths() == [4096, 8192, 12288, 16384]
    follow = cache.prepare(model, context + question, chunk_size=CHUNK)
    assert (follow.reused_tokens, follow.computed_tokens) == (CONTEXT, 20)
    assert_matches_scratch(model, context + question, follow.logits)
    diverged = cache.prepare(model, context[:10000] + question, chunk_size=CHUNK)
    assert diverged.reused_tokens == 8192 and 10000 in cache.snapshot_lengths()
    assert_matches_scratch(model, context[:10000] + question, diverged.logits)
