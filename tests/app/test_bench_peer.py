"""`feldspar bench engine` rows per quantisation, quality rows, CPU flags, and the llama.cpp peer row.

The peer is a small stand-in HTTP server speaking llama.cpp's /completion with `timings`
(the real server cannot be assumed on a test machine). Correctness only, never speed.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from feldspar.cli.bench import parse_quants

from tests.app.cli_runner import run_cli

ARGS = ["bench", "engine", "--tiny", "--prefill-lengths", "24", "--decode-tokens", "4", "--repeats", "1",
        "--no-baseline", "--quality-tokens", "32", "--json"]


class Peer(BaseHTTPRequestHandler):
    """llama.cpp's /completion: records the request, reports timings for what it was asked."""

    requests: list[dict] = []
    slow_first: int = 0  # this many first requests report a tenth of the speed (a busy machine)

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Peer.requests.append({"path": self.path, **body})
        scale = 0.1 if len(Peer.requests) <= Peer.slow_first else 1.0
        answer = {"content": "x", "timings": {"prompt_n": len(body["prompt"]), "prompt_per_second": 250.0 * scale,
                                               "predicted_n": body["n_predict"], "predicted_per_second": 50.0 * scale}}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def peer_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Peer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Peer.requests, Peer.slow_first = [], 0
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_rows_per_quantisation_quality_and_the_peer_row_in_one_run(capsys, monkeypatch, peer_url):
    result = run_cli([*ARGS, "--quants", "int8,int4", "--peer-url", peer_url], capsys, monkeypatch)
    assert result.code == 0, result.err
    report = json.loads(result.out)
    impls = {r["impl"] for r in report["rows"]}
    assert {"feldspar", "llama.cpp"} <= impls and any(i.endswith("int8") for i in impls) \
        and any(i.endswith("int4") for i in impls)
    request = Peer.requests[0]
    assert request["path"] == "/completion" and len(request["prompt"]) == 24 and request["n_predict"] == 4
    assert request["cache_prompt"] is False and request["ignore_eos"] is True
    peer = {r["kind"]: r for r in report["rows"] if r["impl"] == "llama.cpp"}
    ours = {r["kind"]: r for r in report["rows"] if r["impl"] == "feldspar"}
    assert peer["prefill"]["tokens_per_s"] == 250.0 and peer["decode"]["tokens_per_s"] == 50.0
    assert peer["decode"]["vs_feldspar"] == round(50.0 / ours["decode"]["tokens_per_s"], 2)
    base, *others = report["quality"]
    assert (base["impl"], base["max_logit_diff"], base["greedy_agreement"]) == ("feldspar", 0, 1.0)
    int8 = next(q for q in others if q["quant"] == "int8")
    assert 0 < int8["max_logit_diff"] and 0 <= int8["greedy_agreement"] <= 1
    assert int8["weight_bytes"] < base["weight_bytes"]
    assert isinstance(report["cpu_flags"], list)


def test_a_peer_that_does_not_answer_is_one_error_line(capsys, monkeypatch):
    result = run_cli([*ARGS, "--quants", "none", "--peer-url", "http://127.0.0.1:9"], capsys, monkeypatch)
    assert result.code == 1 and "Traceback" not in result.err
    assert "the peer at http://127.0.0.1:9 did not answer /completion" in result.err


def test_parse_quants():
    assert parse_quants("int8, int4") == ("int8", "int4") and parse_quants("none") == ()
    with pytest.raises(Exception):
        parse_quants("int3")


def test_labelled_peers_get_a_prefill_row_per_length_and_a_decode_row(capsys, monkeypatch, peer_url):
    """Each peer is asked before and after Feldspar's rows; the faster round counts (here the
    second: the first four requests see a machine ten times slower)."""
    Peer.slow_first = 4
    args = [a if a != "24" else "16,24" for a in ARGS]
    result = run_cli([*args, "--quants", "none", "--peer-url", f"q8_0={peer_url}", "--peer-url", peer_url],
                     capsys, monkeypatch)
    assert result.code == 0, result.err
    rows = [(r["impl"], r["row"]) for r in json.loads(result.out)["rows"] if r["impl"].startswith("llama.cpp")]
    assert rows == [("llama.cpp q8_0", "prefill 16"), ("llama.cpp q8_0", "prefill 24"),
                    ("llama.cpp q8_0", "decode after 16"),
                    ("llama.cpp", "prefill 16"), ("llama.cpp", "prefill 24"), ("llama.cpp", "decode after 16")]
    asked = [(len(r["prompt"]), r["n_predict"]) for r in Peer.requests]
    assert asked == [(16, 4), (24, 1), (16, 4), (24, 1)] * 2
    speeds = {r["tokens_per_s"] for r in json.loads(result.out)["rows"] if r["impl"].startswith("llama.cpp")}
    assert speeds == {250.0, 50.0}
