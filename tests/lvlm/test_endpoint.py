"""EndpointBackend against a real OpenAI-compatible server, and against a recording stub for the edge cases.

The real server is ``transformers serve`` pinned to a tiny random-weight Qwen2.5-VL folder built by the test
(offline, on loopback, about 5-10 s to start on 2 CPU cores). The small stdlib recording server only checks
what a real server cannot be made to do on demand: headers, retries on 503, timeouts, malformed answers.
"""

from __future__ import annotations

import base64
import errno
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fixtures.tiny_lvlm import chat_request, make_tiny_lvlm, sample_image
from PIL import Image

from lvlmva_desktop.core.runtime.jobs import Cancelled, TaskState
from lvlmva_desktop.lvlm.backend import GenerationSettings, LVLMBackend, LVLMError
from lvlmva_desktop.lvlm.endpoint import EndpointBackend, api_root

SHORT = GenerationSettings(max_new_tokens=8)
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "no_proxy")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the real server ------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def served(tmp_path_factory):
    """``transformers serve`` on a free loopback port, pinned to a tiny model folder; killed at teardown."""
    folder = make_tiny_lvlm("qwen2_5_vl", tmp_path_factory.mktemp("tiny_qwen2_5_vl") / "model")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    log_path = folder.parent / "serve.log"
    cmd = [sys.executable, "-m", "transformers.cli.transformers", "serve", str(folder)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    t0 = time.monotonic()
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
            if time.monotonic() - t0 > 120:
                pytest.fail(
                    f"transformers serve did not answer /health in 120 s:\n{log_path.read_text()[-3000:]}"
                )
            try:
                with no_proxy.open(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        yield {"base": f"http://127.0.0.1:{port}", "model": str(folder)}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@pytest.fixture(scope="session")
def backend(served) -> EndpointBackend:
    return EndpointBackend(served["base"] + "/v1", served["model"], timeout_s=60, max_concurrency=2)


def _req(i: int, n_images: int = 1, system: str | None = "Be brief."):
    return chat_request(f"Describe image {i}.", [sample_image(i + k) for k in range(n_images)], system)


def test_is_an_lvlm_backend(backend):
    assert isinstance(backend, LVLMBackend)


def test_generate_with_image_returns_text_and_usage(backend):
    (gen,) = backend.generate([_req(0)], SHORT)
    (no_image,) = backend.generate([_req(0, n_images=0)], SHORT)
    assert isinstance(gen.text, str) and gen.text
    assert 1 <= gen.generated_tokens <= SHORT.max_new_tokens
    assert gen.finish_reason in ("stop", "length")
    # The image reached the model's processor: it adds vision tokens to the prompt.
    assert gen.prompt_tokens >= no_image.prompt_tokens + 3


def test_stream_concatenation_equals_greedy_generation(backend):
    for i in (1, 2):
        pieces = list(backend.stream(_req(i), SHORT))
        assert len(pieces) >= 1
        assert "".join(pieces) == backend.generate([_req(i)], SHORT)[0].text


def test_closing_a_stream_early_leaves_the_server_usable(backend):
    pieces = backend.stream(_req(3), GenerationSettings(max_new_tokens=64))
    assert next(pieces)
    pieces.close()  # the chat pane's "stop": the connection is closed
    assert backend.generate([_req(3)], SHORT)[0].generated_tokens >= 1


def test_batch_of_five_with_two_in_flight_keeps_request_order(served, backend):
    reqs = [_req(i, n_images=1 + i % 2, system=None if i % 2 else "Be brief.") for i in range(5)]
    one_by_one = EndpointBackend(served["base"], served["model"], max_concurrency=1)  # base without /v1
    expected = [one_by_one.generate([r], SHORT)[0] for r in reqs]
    seen: list[float] = []
    gens = backend.generate(reqs, SHORT, TaskState(on_progress=lambda f, m: seen.append(f)))
    assert [g.text for g in gens] == [g.text for g in expected]
    assert [g.prompt_tokens for g in gens] == [g.prompt_tokens for g in expected]
    assert seen == [0.2, 0.4, 0.6, 0.8, 1.0]


def test_health_check_reports_the_served_model(served, backend):
    rep = backend.health_check()
    assert rep.ok, rep.problem
    assert rep.identity["model"] == served["model"]
    assert rep.identity["served"]["owned_by"]
    assert rep.device == f"remote: {served['base']}/v1"
    assert rep.test_prompt and isinstance(rep.test_output, str) and rep.seconds > 0


def test_health_check_names_the_models_when_ours_is_not_served(served):
    rep = EndpointBackend(served["base"], "no-such-model").health_check()
    assert not rep.ok
    assert "no-such-model" in rep.problem and served["model"] in rep.problem


def test_wrong_model_name_in_generate_is_an_lvlm_error(served):
    with pytest.raises(LVLMError, match=r"127\.0\.0\.1.*HTTP 400.*pinned"):
        EndpointBackend(served["base"], "no-such-model").generate([_req(0)], SHORT)


# -- the base URL rule ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "given, root",
    [
        ("http://gpu:8000", "http://gpu:8000/v1"),
        ("http://gpu:8000/", "http://gpu:8000/v1"),
        ("http://gpu:8000/v1/", "http://gpu:8000/v1"),
        ("https://llm.site/openai/v1", "https://llm.site/openai/v1"),
        ("http://gpu:8000/v1/chat/completions", "http://gpu:8000/v1"),
        ("http://gpu:8000/api", "http://gpu:8000/api/v1"),
    ],
)
def test_api_root_rule(given, root):
    assert api_root(given) == root


@pytest.mark.parametrize("bad", ["gpu:8000", "ftp://gpu/v1", "http://gpu:8000/v1?x=1", ""])
def test_unusable_base_url_is_an_lvlm_error(bad):
    with pytest.raises(LVLMError):
        EndpointBackend(bad, "m")


# -- the recording stub --------------------------------------------------------------------------------
def _completion(text: str = "a red disc") -> dict:
    return {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
    }


class Stub:
    """Answers from a script (status, body, delay) in order, then 200 with a completion; records requests."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.script: list[tuple[int, bytes | dict | str, float]] = []
        self.routes: dict[str, tuple[int, bytes | dict | str, float]] = {}
        self.redirect_to = ""
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                stub.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "json": json.loads(body) if body else None,
                    }
                )
                if self.path in stub.routes:
                    status, payload, delay = stub.routes[self.path]
                elif stub.script:
                    status, payload, delay = stub.script.pop(0)
                else:
                    status, payload, delay = 200, _completion(), 0.0
                time.sleep(delay)
                if isinstance(payload, dict):
                    payload = json.dumps(payload)
                data = payload.encode() if isinstance(payload, str) else payload
                try:
                    self.send_response(status)
                    sse = data.startswith(b"data:") or data.startswith(b":")
                    self.send_header("Content-Type", "text/event-stream" if sse else "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    if stub.redirect_to and 300 <= status < 400:
                        self.send_header("Location", stub.redirect_to)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (timeout tests)
                    pass

            do_GET = do_POST = _handle

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub():
    s = Stub()
    yield s
    s.close()


def _one(url: str = "", **kw) -> EndpointBackend:
    kw.setdefault("backoff_s", 0.01)
    return EndpointBackend(url, "tiny-vl", **kw)


def test_payload_shape(stub):
    im = Image.new("RGB", (20, 10), (255, 0, 0))
    settings = GenerationSettings(max_new_tokens=7, temperature=0.5, top_p=0.9, seed=3)
    (gen,) = _one(stub.url).generate([chat_request("What is it?", [im], system="Be brief.")], settings)
    assert (gen.text, gen.prompt_tokens, gen.generated_tokens, gen.finish_reason) == (
        "a red disc",
        11,
        3,
        "stop",
    )
    (req,) = stub.requests
    body = req["json"]
    assert req["path"] == "/v1/chat/completions" and "authorization" not in req["headers"]
    assert body["model"] == "tiny-vl" and body["stream"] is False
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["seed"]) == (7, 0.5, 0.9, 3)
    assert body["messages"][0] == {"role": "system", "content": [{"type": "text", "text": "Be brief."}]}
    image_part, text_part = body["messages"][1]["content"]
    assert text_part == {"type": "text", "text": "What is it?"}
    url = image_part["image_url"]["url"]
    assert image_part["type"] == "image_url" and url.startswith("data:image/png;base64,")
    back = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert back.size == (20, 10) and back.getpixel((0, 0))[:3] == (255, 0, 0)


def test_api_key_is_sent_from_the_named_variable_and_never_recorded(stub, monkeypatch, caplog):
    monkeypatch.setenv("LVLMVA_TEST_KEY", "s3cret-key")
    be = _one(stub.url, api_key_env="LVLMVA_TEST_KEY")
    with caplog.at_level("DEBUG"):
        be.generate([_req(0)], SHORT)
    assert stub.requests[0]["headers"]["authorization"] == "Bearer s3cret-key"
    assert be.identity()["api_key_env"] == "LVLMVA_TEST_KEY"
    assert "s3cret-key" not in json.dumps(be.identity()) + caplog.text + repr(vars(be))


def test_unset_api_key_variable_says_which_to_set(stub, monkeypatch):
    monkeypatch.delenv("LVLMVA_TEST_KEY", raising=False)
    be = _one(stub.url, api_key_env="LVLMVA_TEST_KEY")
    with pytest.raises(LVLMError, match="LVLMVA_TEST_KEY"):
        be.generate([_req(0)], SHORT)
    assert stub.requests == []
    rep = be.health_check()
    assert not rep.ok and "LVLMVA_TEST_KEY" in rep.problem


def test_401_points_at_the_key(stub, monkeypatch):
    monkeypatch.setenv("LVLMVA_TEST_KEY", "wrong")
    stub.script = [(401, {"error": {"message": "invalid api key"}}, 0.0)]
    with pytest.raises(LVLMError, match=r"HTTP 401.*LVLMVA_TEST_KEY.*invalid api key"):
        _one(stub.url, api_key_env="LVLMVA_TEST_KEY").generate([_req(0)], SHORT)
    assert len(stub.requests) == 1


def test_retries_on_503_then_succeeds(stub):
    stub.script = [(503, "busy", 0.0), (503, "busy", 0.0)]
    (gen,) = _one(stub.url, retries=3).generate([_req(0)], SHORT)
    assert gen.text == "a red disc" and len(stub.requests) == 3


def test_gives_up_after_the_retries(stub):
    stub.script = [(429, "slow down", 0.0)] * 3
    with pytest.raises(LVLMError, match=r"HTTP 429.*after 3 tries"):
        _one(stub.url, retries=2).generate([_req(0)], SHORT)
    assert len(stub.requests) == 3


def test_no_retry_on_400(stub):
    stub.script = [(400, {"detail": "bad request field"}, 0.0)]
    with pytest.raises(LVLMError) as err:
        _one(stub.url, retries=3).generate([_req(0)], SHORT)
    assert stub.url + "/chat/completions" in str(err.value) and "bad request field" in str(err.value)
    assert len(stub.requests) == 1


def test_404_points_at_base_url_and_model(stub):
    stub.script = [(404, "Not Found", 0.0)]
    with pytest.raises(LVLMError, match=r"HTTP 404.*base URL.*tiny-vl"):
        _one(stub.url).generate([_req(0)], SHORT)


def test_timeout_names_the_url(stub):
    stub.script = [(200, _completion(), 1.0)]
    with pytest.raises(LVLMError) as err:
        _one(stub.url, timeout_s=0.2, retries=0).generate([_req(0)], SHORT)
    assert "timeout" in str(err.value) and stub.url in str(err.value)


def test_redirects_are_not_followed(stub, monkeypatch):
    monkeypatch.setenv("LVLMVA_TEST_KEY", "s3cret-key")
    other = Stub()
    try:
        stub.routes["/v1/chat/completions"] = (302, "", 0.0)
        stub.redirect_to = other.url + "/chat/completions"
        with pytest.raises(LVLMError, match="redirects to .*not followed"):
            _one(stub.url, api_key_env="LVLMVA_TEST_KEY").generate([_req(0)], SHORT)
        assert len(stub.requests) == 1 and other.requests == []
    finally:
        other.close()


def test_malformed_json_is_an_lvlm_error(stub):
    stub.script = [(200, "<html>oops</html>", 0.0)]
    with pytest.raises(LVLMError, match="malformed"):
        _one(stub.url).generate([_req(0)], SHORT)


def test_stream_parses_server_sent_events(stub):
    chunks = [{"choices": [{"delta": {"role": "assistant"}}]}] + [
        {"choices": [{"delta": {"content": p}}]} for p in ("a ", "red ", "disc")
    ]
    sse = ": keep-alive\n\n" + "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    stub.script = [(200, sse, 0.0)]
    assert list(_one(stub.url).stream(_req(0), SHORT)) == ["a ", "red ", "disc"]
    assert stub.requests[0]["json"]["stream"] is True


def test_stream_error_event_is_an_lvlm_error(stub):
    stub.script = [
        (200, 'data: {"choices": [{"delta": {"content": "a"}}]}\n\ndata: {"error": "CUDA OOM"}\n\n', 0)
    ]
    with pytest.raises(LVLMError, match="CUDA OOM"):
        list(_one(stub.url).stream(_req(0), SHORT))


def test_health_check_without_models_list(stub):
    stub.routes["/v1/models"] = (404, "Not Found", 0.0)
    rep = _one(stub.url).health_check()
    assert rep.ok, rep.problem
    assert rep.test_output == "a red disc"
    assert [r["path"] for r in stub.requests] == ["/v1/models", "/v1/chat/completions"]


def test_cancel_stops_between_completions(stub):
    stub.script = [(200, _completion(), 0.1)] * 5
    state = TaskState(on_progress=lambda f, m: state.cancel())  # cancel after the first answer
    with pytest.raises(Cancelled):
        _one(stub.url, max_concurrency=1).generate([_req(i) for i in range(5)], SHORT, state)
    time.sleep(0.3)
    assert len(stub.requests) <= 2


# -- unreachable servers -------------------------------------------------------------------------------
def test_connection_refused_names_the_url():
    url = f"http://127.0.0.1:{_free_port()}/v1"
    with pytest.raises(LVLMError, match="connection refused. Is it running") as err:
        _one(url, retries=1).generate([_req(0)], SHORT)
    assert url in str(err.value)
    rep = _one(url, retries=0).health_check()
    assert not rep.ok and url in rep.problem


def test_outbound_network_blocked_gives_one_clear_error(stub, monkeypatch):
    """Only loopback may be reached; a proxy in the environment must not be used to get around that."""
    real_connect = socket.socket.connect
    attempts: list = []

    def loopback_only(sock, address):
        if isinstance(address, tuple) and address[0] == "127.0.0.1":
            return real_connect(sock, address)
        attempts.append(address)
        raise OSError(errno.ENETUNREACH, "Network is unreachable (blocked by the test)")

    monkeypatch.setattr(socket.socket, "connect", loopback_only)
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "all_proxy"):
        monkeypatch.setenv(var, stub.url.removesuffix("/v1"))  # the stub would record a proxied request
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    url = "http://198.51.100.7:8000/v1"
    with pytest.raises(LVLMError) as err:
        _one(url, retries=2).generate([_req(0)], SHORT)
    assert str(err.value).startswith(
        f"Cannot reach the LVLM server at {url}/chat/completions: host unreachable"
    )
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert len(attempts) == 3 and stub.requests == []
