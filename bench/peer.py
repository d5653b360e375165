"""A peer row for ``feldspar bench engine``: the same prompt length through a running llama.cpp server.

``peer_row(url, prompt_tokens, decode_tokens, vocab_size)`` posts random token ids to the
server's native ``/completion`` endpoint (``llama-server``, or llama.cpp's server built by
``pip install 'llama-cpp-python[server]'``), with prompt caching off and end-of-text
ignored, and reads the ``timings`` the server reports (``prompt_n``, ``prompt_per_second``,
``predicted_n``, ``predicted_per_second``). The server measures itself, so HTTP time is not
counted. ``feldspar bench engine`` asks each peer before and after its own rows and keeps the
faster (``fastest_rows``). Any failure is one ``PeerError`` line naming the URL. Knows HTTP and JSON;
nothing of Feldspar's models.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import torch

PEER = "llama.cpp"


class PeerError(RuntimeError):
    """The peer server could not be asked, or did not answer with timings."""


def _post(url: str, body: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    request = urllib.request.Request(url.rstrip("/") + "/completion", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.loads(response.read().decode("utf-8"))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise PeerError(f"the peer at {url} did not answer /completion: {exc}") from None


def peer_timings(url: str, prompt_tokens: int, decode_tokens: int, vocab_size: int,
                 timeout_s: float = 600.0, seed: int = 0) -> dict[str, float]:
    """(prompt tokens, prompt tok/s, predicted tokens, predicted tok/s) as the server measured them."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (prompt_tokens,), generator=generator).tolist()
    body = {"prompt": ids, "n_predict": decode_tokens, "cache_prompt": False, "ignore_eos": True,
            "temperature": 0.0, "stream": False}
    answer = _post(url, body, timeout_s)
    timings = answer.get("timings") if isinstance(answer, dict) else None
    try:
        return {key: float(timings[key]) for key in
                ("prompt_n", "prompt_per_second", "predicted_n", "predicted_per_second")}
    except (TypeError, KeyError, ValueError):
        raise PeerError(f"the peer at {url} answered without prompt/predicted timings") from None


def parse_peer(spec: str) -> tuple[str, str]:
    """``URL`` or ``LABEL=URL`` (e.g. ``q8_0=http://127.0.0.1:8081``) -> (impl name, url)."""
    label, sep, url = spec.partition("=")
    if not sep or label.startswith(("http:", "https:")):
        return PEER, spec
    return f"{PEER} {label.strip()}", url.strip()


def peer_rows(spec: str, prompt_lengths: list[int], decode_tokens: int, vocab_size: int,
              repeats: int = 1) -> list[dict[str, Any]]:
    """A prefill row per prompt length and (if decoding was asked) a decode row after the shortest,
    shaped like the Feldspar rows; the best of ``repeats`` server measurements counts."""
    impl, url = parse_peer(spec)
    shortest = min(prompt_lengths)
    prefill, decode = [], []
    for n in prompt_lengths:
        runs = [peer_timings(url, n, max(decode_tokens, 1) if n == shortest else 1, vocab_size, seed=r)
                for r in range(repeats)]
        best = max(runs, key=lambda t: t["prompt_per_second"])
        prefill.append(_row(impl, f"prefill {n}", "prefill", best["prompt_n"], best["prompt_per_second"]))
        if n == shortest and decode_tokens > 0:
            fastest = max(runs, key=lambda t: t["predicted_per_second"])
            decode.append(_row(impl, f"decode after {n}", "decode", fastest["predicted_n"],
                               fastest["predicted_per_second"]))
    return prefill + decode


def fastest_rows(*rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of several rounds of the same peers merged: per (impl, row) the fastest, in first-round order."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for row in (row for rows in rounds for row in rows):
        key = (row["impl"], row["row"])
        if key not in best or row["tokens_per_s"] > best[key]["tokens_per_s"]:
            best[key] = row
    return list(best.values())


def _row(impl: str, label: str, kind: str, tokens: float, per_second: float) -> dict[str, Any]:
    return {"row": label, "impl": impl, "kind": kind, "tokens": int(tokens),
            "seconds": round(tokens / per_second, 6) if per_second > 0 else 0.0,
            "tokens_per_s": round(per_second, 2), "achieved": None, "achieved_unit": None,
            "roofline_pct": None, "vs_baseline": None, "note": "timings reported by the server"}
