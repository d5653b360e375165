"""Retrieval quality of settings side by side: recall@1/5, MRR and nDCG@10 on the project's eval sets.

The sets: docs/eval (questions worded like the docs), docs/eval/docs_paraphrased.jsonl
(paraphrased questions over the same docs) and the Python reference (``pydoc_data`` topics,
questions are sentences of each topic; see ``retrieval_scale.python_reference_corpus``).
``compare_settings`` ingests each set once per distinct ingest recipe (chunk size, overlap,
header recipe) and searches it under every named variant of search settings (fusion,
BM25 field boosts, MMR), all with one shared embedder, so each row is measured in the
same run. The caller passes a service factory, so this module knows no settings. A
benchmark, not a test: it reports numbers and asserts nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from feldspar.retrieval.evaluation import Question, evaluate, load_questions

# (data home, collection name, **setting overrides) -> a retrieval service
MakeService = Callable[..., object]
INGEST_KEYS = ("chunk_tokens", "chunk_overlap", "chunk_context")
SHOWN = ("recall@1", "recall@5", "mrr", "ndcg@10")


def eval_sets(home: Path, docs: Path, python_reference: bool = True) -> dict[str, tuple[Path, list[Question]]]:
    from feldspar.bench.retrieval_scale import python_reference_corpus

    docs_copy = home / "docs"  # the documents only: not the question files beside them
    docs_copy.mkdir(parents=True, exist_ok=True)
    for page in docs.glob("*.md"):
        shutil.copy2(page, docs_copy / page.name)
    sets = {"docs/eval": (docs_copy, load_questions(docs / "eval" / "docs_questions.jsonl")),
            "docs paraphrased": (docs_copy, load_questions(docs / "eval" / "docs_paraphrased.jsonl"))}
    if python_reference:
        sets["python reference"] = (home / "pyref", python_reference_corpus(home / "pyref"))
    return sets


def compare_settings(make_service: MakeService, home: Path, docs: Path, variants: dict[str, dict],
                     python_reference: bool = True, log: Callable[[str], None] = print) -> list[dict]:
    """One row per (variant, eval set): its metrics. ``variants``: label -> setting overrides."""
    sets = eval_sets(home / "sets", docs, python_reference)
    shared = None
    homes: dict[tuple, Path] = {}
    rows = []
    for label, overrides in variants.items():
        recipe = tuple((key, overrides.get(key)) for key in INGEST_KEYS)
        fresh = recipe not in homes
        data_home = homes.setdefault(recipe, home / f"recipe-{len(homes)}")
        service = make_service(data_home, "quality", **overrides)
        if shared is None:
            shared = service.embedder
        service.use_embedder(shared)
        ingested: set[str] = set()
        for set_label, (folder, questions) in sets.items():
            name = f"q-{folder.name}"  # sets over the same folder share its collection
            if fresh and name not in ingested:
                log(f"  ingest {folder.name} with {dict(recipe)} …")
                service.ingest([folder], collection=name)
                ingested.add(name)
            report = evaluate(questions, lambda q, k: service.search(q, k, collection=name))
            rows.append({"variant": label, "set": set_label, "questions": len(questions),
                         **{metric: report[metric] for metric in SHOWN}})
        service.close()
    return rows


BEFORE = {"chunk_context": "none", "bm25_title_boost": 0, "bm25_heading_boost": 0, "rrf_k": 60,
          "rrf_vector_weight": 1.0, "rrf_bm25_weight": 1.0}  # the settings before contextual chunks


def quality_rows(make_service: MakeService, home: Path, docs: Path, log: Callable[[str], None] = print) -> list[dict]:
    """Benchmark rows: recall@5 and MRR per eval set, before vs today's defaults, same run."""
    table = compare_settings(make_service, home, docs, {"before": BEFORE, "now": {}}, log=log)
    by = {(row["variant"], row["set"]): row for row in table}
    rows = []
    for set_label in dict.fromkeys(row["set"] for row in table):
        for metric in ("recall@5", "mrr"):
            before, now = by[("before", set_label)][metric], by[("now", set_label)][metric]
            rows.append({"measure": f"{metric} {set_label}", "value": f"{before:.3f} -> {now:.3f}",
                         "raw": round(now - before, 4), "target": "no drop", "met": "yes" if now >= before else "NO",
                         "note": f"{by[('now', set_label)]['questions']} questions, before -> now"})
    return rows
