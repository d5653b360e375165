"""Parser subprocesses: results come back, and hangs, crashes and memory hogs become failures."""

from __future__ import annotations

import tests.retrieval.hostile_parsers as hostile

from feldspar.retrieval.sandbox import ParserPool


def run_all(pool: ParserPool, tasks) -> dict:
    return {key: outcome for key, outcome in pool.run(tasks)}


def test_results_come_back_for_every_task():
    with ParserPool(workers=2, timeout_s=30) as pool:
        results = run_all(pool, [(i, hostile.echo, (f"item{i}",)) for i in range(6)])
    assert {k: (o.status, o.value) for k, o in results.items()} == {i: ("ok", f"ITEM{i}") for i in range(6)}


def test_hanging_parser_times_out_and_the_pool_keeps_working():
    tasks = [("hang", hostile.hang, ("x",)), ("after", hostile.echo, ("fine",)), ("more", hostile.echo, ("ok",))]
    with ParserPool(workers=1, timeout_s=1.5) as pool:
        results = run_all(pool, tasks)
    assert results["hang"].status == "failed" and "timed out" in results["hang"].reason
    assert (results["after"].status, results["after"].value) == ("ok", "FINE")
    assert results["more"].value == "OK"


def test_an_answer_later_than_the_limit_counts_as_timed_out():
    """The limit is strict: a quick parse answering after a microsecond's limit times out every
    time, however soon the pool gets to read it (a retry count must not depend on scheduling)."""
    with ParserPool(workers=2, timeout_s=1e-6) as pool:
        results = run_all(pool, [(i, hostile.echo, (f"item{i}",)) for i in range(20)])
    assert {(o.status, o.reason) for o in results.values()} == {("failed", "parsing timed out after 1e-06s")}


def test_dying_parser_is_a_failure_not_a_crash():
    with ParserPool(workers=1, timeout_s=30) as pool:
        results = run_all(pool, [("die", hostile.die, ("x",)), ("next", hostile.echo, ("y",))])
    assert results["die"].status == "failed" and "died" in results["die"].reason
    assert results["next"].value == "Y"


def test_memory_hog_is_stopped_by_the_address_space_limit():
    with ParserPool(workers=1, timeout_s=30, memory_bytes=1024**3) as pool:
        results = run_all(pool, [("hog", hostile.allocate, ("x",)), ("next", hostile.echo, ("z",))])
    assert results["hog"].status == "failed" and "memory" in results["hog"].reason
    assert results["next"].value == "Z"


def test_a_stop_does_not_wait_for_a_parse_in_flight():
    import threading
    import time

    stop = threading.Event()
    tasks = [("hang", hostile.hang, ("x",)), ("quick", hostile.echo, ("y",)), ("later", hostile.echo, ("z",))]
    seen = []
    with ParserPool(workers=2, timeout_s=120) as pool:
        started = time.monotonic()
        for key, _ in pool.run(tasks, stop):
            seen.append(key)
            stop.set()  # a Cancel while "hang" is still being parsed
        waited = time.monotonic() - started
    assert seen == ["quick"]  # nothing after the stop, and no wait for the hanging parse (120 s timeout)
    assert waited < 60, waited
