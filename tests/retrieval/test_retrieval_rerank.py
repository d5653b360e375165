"""The reranker slot (a tiny random cross-encoder built here, offline), MMR diversity, fusion weights."""

from __future__ import annotations

from pathlib import Path

import pytest

from feldspar.retrieval.search import SearchHit, mmr_select, reciprocal_rank_fusion

WORDS = "granite basalt quartz feldspar rock magma crust sensor cable bread dough oven river sand clay".split()


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory) -> Path:
    """A 1-layer BERT sequence classifier with one label and random weights (labelled as such)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder = tmp_path_factory.mktemp("random-weights-cross-encoder")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + list("abcdefghijklmnopqrstuvwxyz.")
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=512, num_labels=1)
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


def corpus(root: Path) -> Path:
    root.mkdir(parents=True)
    for i in range(8):
        words = [WORDS[(i * 3 + j) % len(WORDS)] for j in range(12)]
        (root / f"note{i}.txt").write_text(" ".join(words) + ".\n")
    return root


def test_weighted_rrf():
    fused = reciprocal_rank_fusion([["a", "b"], ["b", "a"]], k=10, weights=[2.0, 1.0])
    assert [item for item, _ in fused] == ["a", "b"]
    assert fused[0][1] == pytest.approx(2 / 11 + 1 / 12)


def test_reranker_reorders_the_top_candidates_by_its_scores(make_service, tiny_cross_encoder, tmp_path):
    from sentence_transformers import CrossEncoder

    root = corpus(tmp_path / "c")
    plain = make_service()
    plain.ingest([root])
    query = "granite rock magma"
    candidates = plain.search(query, k=6)
    reranked = make_service(rerank_model=str(tiny_cross_encoder), rerank_top=6)
    hits = reranked.search(query, k=3)
    scores = CrossEncoder(str(tiny_cross_encoder)).predict([(query, hit.text) for hit in candidates])
    expected = [hit.chunk_id for _, hit in sorted(zip(scores, candidates), key=lambda pair: -pair[0])][:3]
    assert [hit.chunk_id for hit in hits] == expected
    assert [hit.score for hit in hits] == sorted((round(float(s), 6) for s in scores), reverse=True)[:3]


def test_reranker_is_off_by_default(service):
    assert service.config.rerank_model is None and service.searcher(service.embedder).reranker is None


def test_an_unloadable_reranker_is_one_clear_error(make_service, tmp_path):
    from feldspar.retrieval.errors import EmbeddingModelUnavailable

    root = corpus(tmp_path / "c")
    broken = make_service(rerank_model=str(tmp_path / "no-such-model"))
    broken.ingest([root])
    with pytest.raises(EmbeddingModelUnavailable, match="cannot load reranker"):
        broken.search("granite", k=2)


def _hit(chunk_id: str, text: str) -> SearchHit:
    return SearchHit(score=0.0, path=f"{chunk_id}.txt", page=None, start=0, end=len(text), heading="", text=text,
                     root="r", chunk_id=chunk_id)


def test_mmr_moves_a_near_duplicate_below_a_different_hit():
    hits = [_hit("a", "the router resets when the red button is held"),
            _hit("b", "the router resets when the red button is held down"),
            _hit("c", "warranty covers two years of parts")]
    assert [h.chunk_id for h in mmr_select(hits, 2, 0.5)] == ["a", "c"]
    assert [h.chunk_id for h in mmr_select(hits, 2, 1.0)] == ["a", "b"]  # relevance only: the fused order


def test_search_mmr_keeps_duplicate_files_from_filling_the_top(make_service, tmp_path):
    root = tmp_path / "dups"
    root.mkdir()
    text = "To reset the router hold the red button for ten seconds until the lights blink.\n"
    (root / "reset.txt").write_text(text)
    (root / "reset-copy.txt").write_text(text)
    (root / "lights.txt").write_text("The router lights blink green while it starts.\n")
    plain = make_service()
    plain.ingest([root])
    assert {h.path for h in plain.search("reset the router red button", k=2)} == {"reset.txt", "reset-copy.txt"}
    diverse = make_service(search_mmr=0.5)
    top = diverse.search("reset the router red button", k=2)
    assert top[0].path in {"reset.txt", "reset-copy.txt"} and top[1].path == "lights.txt"
