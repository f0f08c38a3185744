"""Issue 15: after a failed call the endpoint's requests still running neither retry nor warn (the error is
the last word), a call that recovers still retries, and the health report's memory field is not empty.

The server is a real stdlib HTTP server on loopback speaking the OpenAI chat-completions protocol."""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fixtures.tiny_lvlm import sample_image

from lvlmva_desktop.lvlm.backend import GenerationSettings, user_message
from lvlmva_desktop.lvlm.endpoint import EndpointBackend, EndpointError

SHORT = GenerationSettings(max_new_tokens=8)


class Server:
    """``script(k)`` says what the k-th chat request (from 1) gets: "ok", "garbage" (not JSON, at once),
    "slow500" (HTTP 500 after ``slow_s``) or "503" (at once)."""

    def __init__(self, script, slow_s: float = 0.5) -> None:
        self.script, self.slow_s, self.posts = script, slow_s, 0
        lock, outer = threading.Lock(), self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._send(200, json.dumps({"data": [{"id": "m"}]}).encode())

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    outer.posts += 1
                    what = outer.script(outer.posts)
                if what == "garbage":
                    self._send(200, b"<html>Bad gateway</html>")
                elif what == "slow500":
                    time.sleep(outer.slow_s)
                    self._send(500, b'{"error": "overloaded"}')
                elif what == "503":
                    self._send(503, b'{"error": "busy"}')
                else:
                    answer = {"choices": [{"message": {"content": "A red disc."}, "finish_reason": "stop"}]}
                    self._send(200, json.dumps(answer).encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> Server:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _requests(n: int) -> list:
    return [[user_message(f"Describe image {i}.", [sample_image(i)])] for i in range(n)]


def _join_endpoint_threads() -> None:
    for t in threading.enumerate():
        if t.name.startswith("lvlm-endpoint"):
            t.join(timeout=60)


def test_a_failed_call_leaves_no_request_retrying_or_warning_after_it(caplog):
    """8 requests, 4 at a time: the first gets an answer no retry mends while 3 others wait for slow HTTP
    500s. generate raises the first failure; afterwards its other requests end without a retry or a
    warning, and the 4 queued ones are never sent."""
    caplog.set_level(logging.WARNING, logger="lvlmva_desktop.lvlm.endpoint")
    with Server(lambda k: "garbage" if k == 1 else "slow500") as server:
        backend = EndpointBackend(server.url, "m", retries=3, backoff_s=0.05, max_concurrency=4)
        with pytest.raises(EndpointError, match=r"malformed answer \(not JSON\)"):
            backend.generate(_requests(8), SHORT)
        told = len(caplog.records)
        _join_endpoint_threads()  # the requests left in flight have finished
        after = [r.getMessage() for r in caplog.records[told:]]
        assert after == [], after
        assert server.posts <= 4, server.posts


def test_a_call_that_recovers_still_retries_and_says_so(caplog):
    caplog.set_level(logging.WARNING, logger="lvlmva_desktop.lvlm.endpoint")
    with Server(lambda k: "503" if k <= 2 else "ok") as server:
        backend = EndpointBackend(server.url, "m", retries=3, backoff_s=0.01, max_concurrency=1)
        out = backend.generate(_requests(1), SHORT)
    assert [g.text for g in out] == ["A red disc."]
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 2 and "retry 1/3" in retries[0] and "retry 2/3" in retries[1], retries


def test_close_ends_a_retry_wait_at_once():
    """close() (the GUI's cancel) still stops the waiting between retries: the call fails with the
    server's error after the try under way, not after the 60 s backoff."""
    with Server(lambda k: "503") as server:
        backend = EndpointBackend(server.url, "m", retries=3, backoff_s=60, max_concurrency=1)
        threading.Timer(0.5, backend.close).start()
        with pytest.raises(EndpointError, match="HTTP 503"):
            backend.generate(_requests(1), SHORT)
        assert server.posts == 1


def test_the_health_report_of_a_server_names_no_memory_it_cannot_know():
    with Server(lambda k: "ok") as server:
        rep = EndpointBackend(server.url, "m").health_check()
    assert rep.ok, rep.problem
    assert rep.memory == "not reported by the server"
