"""Long-context mode: when a whole collection fits the model's window, preload it as a state pack.

With retrieval policy ``auto``, a collection whose documents fit ``share`` of the context
window (with room for the answer) is answered from a state pack of all its indexed files
instead of by search: the model sees everything, and the pack's saved state makes every
question cost only its own tokens. The pack (``auto-<collection>``) is re-made when the
collection's files change (their hashes differ from the pack's sources) or the model does.
Returns the decision with its reason, for the trace. Knows the retrieval service, the
pack reader and packs; the agent only receives documents.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from feldspar.pack_documents import read_pack_documents

BYTES_PER_TOKEN_BOUND = 8  # no tokenizer packs more bytes than this into a token of real text


@dataclass
class LongContextDecision:
    use_pack: bool
    reason: str
    tokens: int | None = None
    pack: str | None = None


def pack_name(collection: str) -> str:
    return f"auto-{collection}"[:64]


def decide(service, engine, collection: str, share: float, answer_tokens: int) -> tuple[LongContextDecision, Any]:
    """(decision, read documents or None); reads the files only when their size could fit."""
    budget = int(engine.context_window * share) - answer_tokens
    rows = [r for r in service.sources(collection, status="indexed")]
    paths = [os.path.join(r["root"], r["path"]) for r in rows]
    total_bytes = sum(r["size"] or 0 for r in rows)
    if not paths:
        return LongContextDecision(False, f"collection {collection!r} has no indexed files"), None
    if total_bytes // BYTES_PER_TOKEN_BOUND > budget:
        return LongContextDecision(False, f"collection {collection!r} ({total_bytes:,} bytes) cannot fit "
                                          f"{share:.0%} of the {engine.context_window:,}-token window: searching"), None
    read = read_pack_documents(paths, max_bytes=max(r["size"] or 0 for r in rows) + 1)
    tokens = len(engine.chat_ids([{"role": "user", "content": "?"}], documents=read.documents))
    if tokens > budget:
        return LongContextDecision(False, f"collection {collection!r} is {tokens:,} tokens, over {share:.0%} of the "
                                          f"{engine.context_window:,}-token window: searching", tokens), None
    return LongContextDecision(True, f"collection {collection!r} is {tokens:,} tokens, within {share:.0%} of the "
                                     f"{engine.context_window:,}-token window: answering from a state pack of "
                                     f"all {len(read.documents)} files", tokens, pack_name(collection)), read


def ensure_pack(engine, packs_dir, name: str, read, progress=None, tools: list[dict] | None = None) -> None:
    """Make the collection's pack unless an up-to-date one for this model and these tools exists."""
    from feldspar.model.errors import StateError
    from feldspar.model.pack_identity import check_compatible
    from feldspar.model.packs import create_pack, read_meta, tools_digest

    try:
        meta = read_meta(packs_dir, name)
        check_compatible(meta, engine)
        current = sorted((s["path"], s["sha256"]) for s in read.sources)
        same_tools = str(meta.get("tools_sha256") or "") == tools_digest(tools)
        if same_tools and sorted((s["path"], s["sha256"]) for s in meta.get("sources", [])) == current:
            return
    except StateError:
        pass
    create_pack(engine, packs_dir, name, read.documents, read.sources, force=True, progress=progress, tools=tools)
