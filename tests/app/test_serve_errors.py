"""`feldspar serve` under bad input and load: OpenAI-shaped errors with the right status codes,
429 with Retry-After beyond the queue, disconnects stop generation, the bearer token; and the
server keeps serving after each. Queueing and disconnects are driven by a gated backend
(tests/app/serve_helpers.py) and observed through events, never timing."""

from __future__ import annotations

import json
import socket

import httpx
import openai
import pytest

from tests.app.serve_helpers import GatedBackend

KEY = "test-key-123"
HELLO = [{"role": "user", "content": "hello"}]
BOUND = 60  # seconds: a safety bound on waits for events, never a synchronisation
MAX_BODY = 64 * 1024
KEEPALIVE_S = 0.2


@pytest.fixture(scope="module")
def server():
    from feldspar.agents.scripted import ScriptedBackend
    from feldspar.serve.endpoints import create_app
    from feldspar.serve.models import ServedModel
    from feldspar.serve.run import serve_in_thread

    gated = GatedBackend()
    small = ScriptedBackend(["Fine, thanks."] * 100, name="small", context_window=1024)
    app = create_app([ServedModel("gated", gated), ServedModel("small", small, default_max_tokens=64)], queue=1,
                     max_body=MAX_BODY, keepalive_s=KEEPALIVE_S)
    with serve_in_thread(app) as url:
        yield {"url": url, "gated": gated, "app": app}


@pytest.fixture
def gated(server):
    server["gated"].reset()
    yield server["gated"]
    server["gated"].gate.set()  # never leave a worker waiting


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server["url"] + "/v1", api_key="unused", max_retries=0, timeout=BOUND)


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert "Traceback" not in response.text
    if code is not None:
        assert error["code"] == code, error
    return error


def gated_lane(server):
    state = server["app"].state.feldspar
    return state.lane(state.model("gated"))


def still_serving(client) -> None:
    assert client.chat.completions.create(model="small", messages=HELLO).choices[0].message.content == "Fine, thanks."


# ---- bad requests ------------------------------------------------------------------------
def test_unknown_model_is_404_model_not_found(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="granite-99", messages=HELLO)
    assert info.value.status_code == 404 and info.value.body["code"] == "model_not_found"
    assert "small" in info.value.body["message"]
    still_serving(client)


def test_prompt_over_the_window_is_400_context_length_exceeded(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="small", messages=[{"role": "user", "content": "word " * 2000}])
    assert info.value.body["code"] == "context_length_exceeded"
    assert "1024-token context window" in info.value.body["message"]
    still_serving(client)


def test_malformed_json_body_is_400(server, client):
    error = assert_error(httpx.post(server["url"] + "/v1/chat/completions", content=b'{"model": "small", "mess',
                                    headers={"Content-Type": "application/json"}), 400, "invalid_json")
    assert "not valid JSON" in error["message"]
    still_serving(client)


@pytest.mark.parametrize("body, param", [
    ({"model": "small"}, "messages"),
    ({"model": "small", "messages": []}, "messages"),
    ({"model": "small", "messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
    ({"model": "small", "messages": HELLO, "n": 3}, "n"),
    ({"model": "small", "messages": HELLO, "temperature": -1}, "temperature"),
    ({"model": "small", "messages": HELLO, "max_tokens": 0}, "max_tokens"),
    ([1, 2, 3], None),
])
def test_invalid_bodies_are_400_naming_the_field(server, body, param):
    error = assert_error(httpx.post(server["url"] + "/v1/chat/completions", json=body), 400, "invalid_value")
    assert error["param"] == param


def test_unknown_paths_and_methods_are_openai_shaped(server):
    assert_error(httpx.get(server["url"] + "/v1/embeddings"), 404, "not_found")
    assert_error(httpx.get(server["url"] + "/v1/chat/completions"), 405)


def test_a_body_sent_as_a_form_type_is_still_read_as_json(server):
    response = httpx.post(server["url"] + "/v1/chat/completions", content=b'{"model": "small", "messages": '
                          b'[{"role": "user", "content": "hi"}]}', headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "Fine, thanks."


def test_a_body_over_the_limit_is_413_whether_declared_or_streamed(server, client):
    big = {"model": "small", "messages": [{"role": "user", "content": "word " * (MAX_BODY // 4)}]}
    error = assert_error(httpx.post(server["url"] + "/v1/chat/completions", json=big), 413, "request_too_large")
    assert f"{MAX_BODY:,}-byte limit" in error["message"]

    def chunked():  # no Content-Length: the server counts as the body arrives
        yield b'{"model": "small", "messages": [{"role": "user", "content": "'
        for _ in range(MAX_BODY // 1024 + 1):
            yield b"x" * 1024
        yield b'"}]}'

    assert_error(httpx.post(server["url"] + "/v1/chat/completions", content=chunked()), 413, "request_too_large")
    under = {"model": "small", "messages": [{"role": "user", "content": "word " * 100}]}
    assert httpx.post(server["url"] + "/v1/chat/completions", json=under).status_code == 200
    still_serving(client)


# ---- the queue -----------------------------------------------------------------------------
def test_a_burst_beyond_the_queue_gets_429_with_retry_after_and_the_rest_complete(client, gated, server):
    running = client.chat.completions.create(model="gated", messages=HELLO, max_tokens=3, stream=True)
    first = [next(running), next(running)]  # the role chunk, then the first token: it runs, held at the gate
    assert first[1].choices[0].delta.content == "tok "
    waiting = client.chat.completions.create(model="gated", messages=HELLO, max_tokens=3, stream=True)  # queued
    refused = httpx.post(server["url"] + "/v1/chat/completions", json={"model": "gated", "messages": HELLO})
    error = assert_error(refused, 429, "queue_full")
    assert error["type"] == "rate_limit_error" and int(refused.headers["retry-after"]) >= 1
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gated", messages=HELLO)
    assert len(gated.runs) == 2  # the refused requests never reached the backend
    health = httpx.get(server["url"] + "/health").json()["lanes"]["gated"]
    assert (health["running"], health["waiting"], health["rejected"]) == (1, 1, 2)
    gated.gate.set()
    texts = ["".join(c.choices[0].delta.content or "" for c in chunks if c.choices) for chunks in (list(running), list(waiting))]
    assert texts == ["tok tok ", "tok tok tok "]  # the first stream's first token was read above
    assert all(run.finished.is_set() for run in gated.runs)
    assert client.chat.completions.create(model="gated", messages=HELLO, max_tokens=2).choices[0].message.content == "tok tok "


def test_other_models_are_not_blocked_by_a_full_queue(client, gated):
    held = client.chat.completions.create(model="gated", messages=HELLO, max_tokens=2, stream=True)
    next(held), next(held)
    still_serving(client)  # another backend, another lane
    gated.gate.set()
    list(held)


def test_a_stream_waiting_in_the_queue_gets_keep_alive_comments_then_its_answer(client, gated, server):
    running = client.chat.completions.create(model="gated", messages=HELLO, max_tokens=2, stream=True)
    next(running), next(running)  # held at the gate: the next request waits in the queue
    body = {"model": "gated", "messages": HELLO, "max_tokens": 2, "stream": True}
    with httpx.stream("POST", server["url"] + "/v1/chat/completions", json=body, timeout=BOUND) as queued:
        lines = queued.iter_lines()
        assert json.loads(next(lines).removeprefix("data: "))["choices"][0]["delta"]["role"] == "assistant"
        assert next(line for line in lines if line) == ": keep-alive"  # nothing else can come while it waits
        assert not gated.runs[1].started.is_set()  # still queued
        gated.gate.set()
        events = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1])
    assert text == "tok tok "
    list(running)


# ---- disconnects ---------------------------------------------------------------------------
def test_a_streaming_client_that_disconnects_stops_its_generation(server, client, gated):
    lane = gated_lane(server)
    left = lane.stats.left_running
    stream = client.chat.completions.create(model="gated", messages=HELLO, max_tokens=100_000, stream=True)
    next(stream), next(stream)
    stream.close()  # the client goes away mid-stream
    assert lane.wait_for(lambda stats: stats.left_running > left, BOUND)  # the server saw it leave
    gated.gate.set()  # let the generation run: only the server's disconnect handling can stop it now
    (run,) = gated.runs
    assert run.closed.wait(BOUND), "the generation was not stopped"
    assert not run.finished.is_set() and run.produced == 2  # it stopped at the first token after the gate
    still_serving(client)


def test_a_non_streaming_client_that_gives_up_stops_its_generation(server, gated, client):
    lane = gated_lane(server)
    left = lane.stats.left_running
    body = json.dumps({"model": "gated", "messages": HELLO, "max_tokens": 100_000}).encode()
    host, port = server["url"].removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=BOUND) as sock:  # a client that can give up at will
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (host.encode(), len(body), body))
        run = gated.wait_run(0, BOUND)
        assert run.started.wait(BOUND)  # held at the gate after its first token, the answer cannot come yet
    assert lane.wait_for(lambda stats: stats.left_running > left, BOUND)  # the server saw the client give up
    gated.gate.set()
    assert run.closed.wait(BOUND), "the generation was not stopped"
    assert not run.finished.is_set() and run.produced == 2


def test_a_request_whose_client_left_while_queued_never_runs(client, gated, server):
    running = client.chat.completions.create(model="gated", messages=HELLO, max_tokens=2, stream=True)
    next(running), next(running)
    queued = client.chat.completions.create(model="gated", messages=HELLO, max_tokens=2, stream=True)
    next(queued)  # its role chunk: admitted, waiting behind the first
    queued.close()
    lane = gated_lane(server)
    assert lane.wait_for(lambda stats: stats.abandoned >= 1, BOUND)  # the server saw the queued client leave
    gated.gate.set()
    list(running)
    follow = client.chat.completions.create(model="gated", messages=HELLO, max_tokens=2)  # runs after the queued one
    assert follow.choices[0].message.content == "tok tok "
    assert len(gated.runs) == 3 and not gated.runs[1].started.is_set()


# ---- the bearer token ----------------------------------------------------------------------
def test_the_bearer_token_is_required_when_configured():
    from feldspar.agents.scripted import ScriptedBackend
    from feldspar.serve.endpoints import create_app
    from feldspar.serve.models import ServedModel
    from feldspar.serve.run import serve_in_thread

    app = create_app([ServedModel("small", ScriptedBackend(["ok"] * 5))], api_key=KEY)
    with serve_in_thread(app) as url:
        for key in ("wrong", ""):
            anonymous = openai.OpenAI(base_url=url + "/v1", api_key=key or "x", max_retries=0)
            with pytest.raises(openai.AuthenticationError) as info:
                anonymous.chat.completions.create(model="small", messages=HELLO)
            assert info.value.status_code == 401 and info.value.body["code"] == "invalid_api_key"
        assert_error(httpx.get(url + "/v1/models"), 401, "invalid_api_key")
        assert_error(httpx.post(url + "/v1/chat/completions", content=b"{oops"), 401, "invalid_api_key")
        assert httpx.get(url + "/health").json()["status"] == "ok"
        allowed = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
        assert allowed.chat.completions.create(model="small", messages=HELLO).choices[0].message.content == "ok"
