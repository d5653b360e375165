"""Incremental detokenization equals decoding the whole sequence."""

from __future__ import annotations

import random

from feldspar.model.detok import Detokenizer


def test_deltas_concatenate_to_the_full_decode(tiny_tokenizer):
    text = "Plain ASCII, then Grüße, 世界, emoji 🌍🚀 and a tab\tnewline\n end."
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    detok = Detokenizer(tiny_tokenizer)
    assert "".join(detok.push(i) for i in ids) == text == detok.text()


def test_random_token_streams_never_lose_text(tiny_tokenizer):
    rng = random.Random(0)
    vocab = len(tiny_tokenizer)
    for _ in range(20):
        ids = [rng.randrange(vocab) for _ in range(40)]
        detok = Detokenizer(tiny_tokenizer)
        streamed = "".join(detok.push(i) for i in ids)
        full = detok.text()
        assert full.startswith(streamed)
        assert streamed + detok.flush() == full
