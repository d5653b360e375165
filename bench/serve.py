"""`feldspar bench serve`: concurrent OpenAI clients against a running Feldspar server.

For each target (a label and a factory the app passes in: entering it starts a server on a
loopback port and yields its base URL and model id; leaving it stops the server), a fixed
number of requests is sent by ``clients`` concurrent workers with the official ``openai``
client: streaming chat, one shared system prompt, a different question each (so reuse
comes from the shared prefix, not from repeated prompts), usage
included. Per target it reports requests/s (completed requests over the wall time of the
burst), p50/p95 time to first token (request sent -> first content chunk, or the final
chunk when a random model's first tokens are not yet printable text), the share of prompt
tokens reused from saved state (``cached_tokens`` / ``prompt_tokens``), errors, and 429s
(requests refused beyond the server's queue; not retried). One warm-up request
before each burst is not counted. Bounded: ``requests`` requests,
``clients`` threads, loopback only. Knows the OpenAI client and timing; prints nothing.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

Log = Callable[[str], None]
Target = Callable[[], AbstractContextManager[tuple[str, str]]]

SYSTEM = ("You are the help desk of a small company that sells routers, modems and mesh Wi-Fi kits. Answer in "
          "one or two sentences, name the product and the setting the customer should change, and say when a "
          "question needs a technician instead. Never invent a product, a price or a firmware version; if you "
          "do not know, say so and point to the support page. Keep a friendly, plain tone.")
QUESTIONS = ("How do I reset my router?", "Why is my Wi-Fi slow upstairs?", "Can I use my own modem?",
             "What does a blinking amber light mean?", "How do I change the Wi-Fi password?",
             "Does the mesh kit support WPA3?", "How do I update the firmware?", "Why does the modem reboot?")


@dataclass(frozen=True)
class ServeBenchConfig:
    clients: int = 4
    requests: int = 32
    max_new_tokens: int = 8
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if not (1 <= self.clients <= 64 and 1 <= self.requests <= 10_000):
            raise ValueError("clients must be 1..64 and requests 1..10000")


@dataclass
class Outcome:
    ok: bool = False
    refused: bool = False  # 429
    error: str | None = None
    ttft_s: float | None = None
    total_s: float = 0.0
    prompt_tokens: int = 0
    cached_tokens: int = 0


@dataclass
class Tally:
    outcomes: list[Outcome] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, outcome: Outcome) -> None:
        with self.lock:
            self.outcomes.append(outcome)


def one_request(client: Any, model: str, question: str, max_new_tokens: int) -> Outcome:
    import openai

    outcome = Outcome()
    started = time.perf_counter()
    try:
        stream = client.chat.completions.create(
            model=model, stream=True, stream_options={"include_usage": True}, max_tokens=max_new_tokens,
            messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}])
        for chunk in stream:
            if chunk.choices and outcome.ttft_s is None and (chunk.choices[0].delta.content or chunk.choices[0].finish_reason):
                outcome.ttft_s = time.perf_counter() - started
            if chunk.usage is not None:
                outcome.prompt_tokens = chunk.usage.prompt_tokens
                details = chunk.usage.prompt_tokens_details
                outcome.cached_tokens = (details.cached_tokens or 0) if details else 0
        outcome.ok = True
    except openai.RateLimitError:
        outcome.refused = True
    except Exception as exc:  # counted and reported, the burst goes on
        outcome.error = f"{type(exc).__name__}: {exc}"[:200]
    outcome.total_s = time.perf_counter() - started
    return outcome


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))]


def burst(base_url: str, model: str, cfg: ServeBenchConfig) -> dict[str, Any]:
    import openai

    client = openai.OpenAI(base_url=base_url + "/v1", api_key="bench", max_retries=0, timeout=cfg.timeout_s)
    warm = one_request(client, model, "Hello?", cfg.max_new_tokens)  # first-call setup is not what we measure
    if not warm.ok:
        raise RuntimeError(f"the server did not answer a first request: {warm.error or '429'}")
    tally = Tally()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=cfg.clients) as pool:
        for i in range(cfg.requests):
            question = f"{QUESTIONS[i % len(QUESTIONS)]} (ticket {i + 1})"  # every prompt differs after the system prompt
            pool.submit(lambda q=question: tally.add(one_request(client, model, q, cfg.max_new_tokens)))
    wall = time.perf_counter() - started
    done = [o for o in tally.outcomes if o.ok]
    ttfts = [o.ttft_s for o in done if o.ttft_s is not None]
    prompt = sum(o.prompt_tokens for o in done)
    errors = [o.error for o in tally.outcomes if o.error]
    return {"requests": cfg.requests, "completed": len(done), "wall_s": round(wall, 3),
            "requests_per_s": round(len(done) / wall, 3) if wall > 0 else None,
            "ttft_p50_s": _round(percentile(ttfts, 0.5)), "ttft_p95_s": _round(percentile(ttfts, 0.95)),
            "reused_share": round(sum(o.cached_tokens for o in done) / prompt, 3) if prompt else None,
            "prompt_tokens": prompt, "errors": len(errors), "refused_429": sum(o.refused for o in tally.outcomes),
            "first_errors": errors[:3]}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def run_serve_bench(targets: dict[str, Target], cfg: ServeBenchConfig, log: Log = lambda _m: None) -> dict[str, Any]:
    """One burst per target; ``targets`` map a label to a factory that serves it (see the module doc)."""
    started = time.perf_counter()
    rows = []
    for label, start in targets.items():
        log(f"{label}: starting the server …")
        with start() as (base_url, model):
            log(f"{label}: {cfg.requests} requests from {cfg.clients} clients …")
            rows.append({"target": label, **burst(base_url, model, cfg)})
    return {"config": asdict(cfg), "rows": rows, "elapsed_s": round(time.perf_counter() - started, 1)}


def table_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for row in report["rows"]:
        out.append({"target": row["target"], "done": f"{row['completed']}/{row['requests']}",
                    "req/s": _fmt(row["requests_per_s"], 2), "TTFT p50 s": _fmt(row["ttft_p50_s"], 3),
                    "TTFT p95 s": _fmt(row["ttft_p95_s"], 3),
                    "reused": "" if row["reused_share"] is None else f"{row['reused_share'] * 100:.0f}%",
                    "errors": row["errors"], "429s": row["refused_429"]})
    return out


def _fmt(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"
