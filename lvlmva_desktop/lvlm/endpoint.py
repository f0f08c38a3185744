"""An LVLM behind a site's OpenAI-compatible chat-completions server (vLLM, llama.cpp, TGI, transformers serve).

Only the standard library speaks HTTP here, so the endpoint back-end adds no dependency.

Base URL rule: the API root is the given URL when its path ends in ``/v<N>`` (``http://gpu:8000/v1``), and
the given URL + ``/v1`` otherwise (``http://gpu:8000`` -> ``http://gpu:8000/v1``); a pasted
``.../chat/completions`` is cut off. Requests then go to ``<root>/chat/completions`` and ``<root>/models``.

Proxies are never used: the opener has an empty ProxyHandler, so ``http_proxy`` & co. in the environment are
ignored. The tool works offline; the only connection it may open is the one to the configured endpoint. For
the same reason redirects are not followed (urllib would carry the API key to wherever they point).

Token probabilities: when the caller asks for them (``GenerationSettings.token_probs``, the critic does) the
request carries ``"logprobs": true``, which costs the server nothing it has not computed and adds one short
entry per token to the answer. A server that returns none gives a Generation without them (the verdicts
then carry no confidence); one that answers an HTTP error to the field is asked again without it, and not
asked for it again.

The API key lives in an environment variable whose NAME is configured; it is read at each request and never
stored, logged or written anywhere.
"""

from __future__ import annotations

import base64
import errno
import http.client
import io
import json
import logging
import os
import re
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any

from PIL import Image, ImageDraw

from lvlmva_desktop.core.runtime.jobs import TaskState, ensure_state
from lvlmva_desktop.core.runtime.secrets import (
    check_variable_name,
    has_credentials,
    remember,
    scrub,
    without_credentials,
)
from lvlmva_desktop.lvlm.backend import (
    ChatRequest,
    Generation,
    GenerationSettings,
    HealthReport,
    LVLMError,
    token_ends,
    user_message,
)

log = logging.getLogger(__name__)

_TEST_PROMPT = "Describe this image in one short sentence."
_NO_MODELS_LIST = (404, 405, 501)  # servers without GET /models answer one of these
#: the health report's memory field: the OpenAI-compatible API tells nothing of the server's memory
SERVER_MEMORY = "not reported by the server"


class EndpointError(LVLMError):
    """An LVLMError about one URL; ``status`` is the HTTP status when the server answered one."""

    def __init__(self, message: str, url: str, status: int | None = None) -> None:
        super().__init__(scrub(message))  # a server may echo what it was sent, the key included
        self.url = url
        self.status = status


class _NotSent(EndpointError):
    """A queued request of a generate() call that had already failed (never shown: that failure is)."""


def api_root(base_url: str) -> str:
    """The API root for ``base_url`` by the rule in the module docstring; LVLMError for a URL we cannot use."""
    url = base_url.strip().rstrip("/")
    shown = scrub(without_credentials(url))
    if has_credentials(url):
        raise LVLMError(
            f"The LVLM server URL {shown} must not carry a user name or password: they would be stored with "
            "the project's records. Give the server's key in an environment variable and name it "
            "(--api-key-env NAME, or the LVLM settings' key variable)."
        )
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise LVLMError(f"The LVLM server URL '{shown}' must look like http://host:port/v1.")
    if parts.query or parts.fragment:
        raise LVLMError(f"The LVLM server URL '{shown}' must not have a query (?...) or fragment (#...).")
    path = re.sub(r"/chat/completions$", "", parts.path.rstrip("/"))
    if not re.search(r"/v\d+$", path):
        path += "/v1"
    return f"{parts.scheme}://{parts.netloc}{path}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises HTTPError for the 3xx answer


def _test_image() -> Image.Image:
    """A small picture for the health check: a red disc on a blue background."""
    im = Image.new("RGB", (64, 64), (40, 60, 160))
    ImageDraw.Draw(im).ellipse([16, 16, 48, 48], fill=(210, 40, 40))
    return im


class EndpointBackend:
    """LVLMBackend against an OpenAI-compatible server; requests run ``max_concurrency`` at a time."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = None,
        timeout_s: float = 120,
        retries: int = 3,
        backoff_s: float = 1.0,
        max_concurrency: int = 4,
        image_format: str = "PNG",
    ) -> None:
        if not model:
            raise LVLMError("Name the model the LVLM server should use (as its /v1/models lists it).")
        self.base_url = api_root(base_url)
        self.model = model
        try:
            check_variable_name(api_key_env or "")
        except ValueError as e:
            raise LVLMError(str(e)) from None
        self.api_key_env = api_key_env or None
        self.timeout_s = float(timeout_s)
        self.retries = max(0, int(retries))
        self.backoff_s = max(0.0, float(backoff_s))
        self.max_concurrency = max(1, int(max_concurrency))
        self.image_format = image_format.upper()
        if self.image_format not in ("PNG", "JPEG", "WEBP"):
            raise LVLMError(f"Images can be sent as PNG, JPEG or WEBP, not '{image_format}'.")
        # Empty ProxyHandler: environment proxies must never see the images (see the module docstring).
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
        self._closed = threading.Event()
        # generate() gives its requests a "stop" event, set when the call ends (done, failed or cancelled)
        # so that the requests it leaves running neither retry nor warn afterwards
        self._stop_lock = threading.Lock()  # a retry warning and the end of its call never interleave
        self._logprobs_refused = False  # the server answered 400/422 to a request with "logprobs"

    # -- LVLMBackend ----------------------------------------------------------------------------------
    def identity(self) -> dict:
        """Configuration only (no network), so it is stable and can key the critique cache."""
        return dict(kind="endpoint", base_url=self.base_url, model=self.model, api_key_env=self.api_key_env)

    def generate(
        self,
        requests: Sequence[ChatRequest],
        settings: GenerationSettings | None = None,
        state: TaskState | None = None,
    ) -> list[Generation]:
        """One answer per request, in order; up to max_concurrency in flight; cancellable between answers."""
        settings = settings or GenerationSettings()
        state = ensure_state(state)
        n = len(requests)
        if n == 0:
            return []
        self._headers()  # a missing API key fails before any request is sent
        results: list[Generation | None] = [None] * n
        stop = threading.Event()

        def complete(req: ChatRequest) -> Generation:
            try:
                return self._complete(req, settings, stop)
            except BaseException:
                with self._stop_lock:  # this call has failed: its other requests stop (before this
                    stop.set()  # worker can take up a queued one)
                raise

        pool = ThreadPoolExecutor(min(self.max_concurrency, n), thread_name_prefix="lvlm-endpoint")
        try:
            futures = {pool.submit(complete, req): i for i, req in enumerate(requests)}
            pending, done_count = set(futures), 0
            while pending:
                state.check()
                done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                for fut in done:
                    if isinstance(fut.exception(), _NotSent):
                        continue  # another request failed first: its error is raised, not this one
                    results[futures[fut]] = fut.result()
                    done_count += 1
                    state.progress(done_count, n, f"{done_count}/{n} answers from {self.base_url}")
        finally:
            # Queued requests are dropped; the ones in flight finish in the background and are discarded,
            # without retrying or warning: once this call has failed, its error is the last word.
            with self._stop_lock:
                stop.set()
            pool.shutdown(wait=False, cancel_futures=True)
        if any(r is None for r in results):  # cannot happen: a request is only left unsent after a failure
            raise LVLMError(f"The LVLM server at {self.base_url} left requests unanswered.")
        return [r for r in results if r is not None]

    def stream(self, request: ChatRequest, settings: GenerationSettings | None = None) -> Iterator[str]:
        """Pieces of one answer from the server-sent events; closing the iterator closes the connection."""
        url = self.base_url + "/chat/completions"
        payload = self._payload(request, settings or GenerationSettings(), stream=True)
        resp = self._call("POST", "/chat/completions", payload, stream=True)
        try:
            data: list[str] = []
            for raw in resp:
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if line.startswith("data:"):
                    data.append(line[5:].lstrip())
                    continue
                if line or not data:
                    continue  # comments (":"), "event:"/"id:" fields, stray blank lines
                event, data = "\n".join(data), []
                if event == "[DONE]":
                    return
                yield from self._event_pieces(event, url)
            if data and data != ["[DONE]"]:  # a last event without its blank line (transformers serve)
                yield from self._event_pieces("\n".join(data), url)
        except (OSError, http.client.HTTPException) as exc:
            raise self._explain(exc, url)[0] from None
        finally:
            resp.close()

    def health_check(self) -> HealthReport:
        """Is the model served, and does a short generation with an image work? Never raises."""
        t0 = time.monotonic()
        rep = HealthReport(
            ok=False,
            identity=self.identity(),
            device=f"remote: {self.base_url}",
            memory=SERVER_MEMORY,
            test_prompt=_TEST_PROMPT,
        )
        try:
            served = self._served_models()
            if served is not None:
                ids = [str(m.get("id")) for m in served]
                if self.model not in ids:
                    raise LVLMError(
                        f"The LVLM server at {self.base_url} does not serve the model '{self.model}'; "
                        f"it serves: {', '.join(ids) or 'nothing'}. Set the model name to one of these."
                    )
                info = served[ids.index(self.model)]
                rep.identity["served"] = {k: info[k] for k in ("owned_by", "created", "root") if k in info}
            settings = GenerationSettings(max_new_tokens=16)
            gen = self.generate([[user_message(_TEST_PROMPT, [_test_image()])]], settings)[0]
            rep.test_output = gen.text
            rep.ok = True
        except LVLMError as exc:
            rep.problem = str(exc)
        except Exception as exc:  # the check must report, not crash the dialog that runs it
            log.exception("health check of %s failed unexpectedly", self.base_url)
            rep.problem = f"Unexpected error while checking the LVLM server at {self.base_url}: {exc!r}"
        rep.seconds = time.monotonic() - t0
        return rep

    def close(self) -> None:
        """Stop waiting between retries; there is no connection pool to close."""
        self._closed.set()

    # -- requests -------------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env, "").strip()
            remember(key)  # whatever a server echoes of it is scrubbed before it is stored or shown
            if not key:
                raise LVLMError(
                    f"The LVLM server's API key is read from the environment variable {self.api_key_env}, "
                    f"which is not set. Set {self.api_key_env} before starting the tool."
                )
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _image_url(self, image: Any) -> str:
        if isinstance(image, str) and image.startswith(("data:", "http://", "https://")):
            return image
        if not isinstance(image, Image.Image):
            raise LVLMError(f"An image in the request is a {type(image).__name__}, not a PIL image.")
        if self.image_format == "JPEG" and image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        buf = io.BytesIO()
        image.save(buf, format=self.image_format)
        b64 = base64.b64encode(buf.getvalue()).decode("ascii")
        return f"data:image/{self.image_format.lower()};base64,{b64}"

    def _content(self, content: str | list[dict]) -> str | list[dict]:
        """Text parts stay text parts (system turns too); images become data-URL ``image_url`` parts."""
        if isinstance(content, str):
            return content
        parts = []
        for part in content:
            kind = part.get("type")
            if kind == "text":
                parts.append({"type": "text", "text": part["text"]})
            elif kind == "image":
                parts.append({"type": "image_url", "image_url": {"url": self._image_url(part["image"])}})
            elif kind == "image_url":
                parts.append(part)
            else:
                raise LVLMError(f"Cannot send a '{kind}' part to the LVLM server.")
        return parts

    def _payload(self, request: ChatRequest, settings: GenerationSettings, stream: bool = False) -> dict:
        payload = {
            "model": self.model,
            "messages": [{"role": m["role"], "content": self._content(m["content"])} for m in request],
            "max_tokens": int(settings.max_new_tokens),
            "temperature": float(settings.temperature),
            "top_p": float(settings.top_p),
            "seed": int(settings.seed),
            "stream": stream,
        }
        if settings.token_probs and not stream and not self._logprobs_refused:
            payload["logprobs"] = True
        return payload

    def _complete(
        self, request: ChatRequest, settings: GenerationSettings, stop: threading.Event | None = None
    ) -> Generation:
        t0 = time.monotonic()
        url = self.base_url + "/chat/completions"
        if stop is not None and stop.is_set():  # a queued request its call no longer waits for
            raise _NotSent("Not sent: the call it belonged to has ended.", url)
        payload = self._payload(request, settings)
        try:
            obj = self._call("POST", "/chat/completions", payload, stop=stop)
        except EndpointError as exc:
            if "logprobs" not in payload or exc.status is None or not 400 <= exc.status < 600:
                raise
            if stop is not None and stop.is_set():
                raise
            # a server that does not know the field (or breaks on it): the answer matters, the probabilities
            # do not; if the plain request fails too, that error is the one told
            log.info("%s refused 'logprobs' (HTTP %s); asking without it", self.base_url, exc.status)
            self._logprobs_refused = True
            payload.pop("logprobs")
            obj = self._call("POST", "/chat/completions", payload, stop=stop)
        try:
            choice = obj["choices"][0]
            text = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            said = str(obj.get("error") or obj if isinstance(obj, dict) else obj)[:300]
            raise EndpointError(f"The LVLM server at {url} sent no choices[0].message: {said}", url) from None
        usage = obj.get("usage") or {}
        tokens = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        extra = {"seconds": round(time.monotonic() - t0, 3), "server_model": obj.get("model")}
        probs = _token_probs(choice, text) if "logprobs" in payload else None
        return Generation(
            text,
            *tokens,
            finish_reason=str(choice.get("finish_reason") or ""),
            extra=extra,
            token_probs=probs,
        )

    def _served_models(self) -> list[dict] | None:
        """The entries of GET /models, or None when the server has no such list."""
        try:
            obj = self._call("GET", "/models")
        except EndpointError as exc:
            if exc.status in _NO_MODELS_LIST:
                log.info("%s has no /models (HTTP %s); model name not checked", self.base_url, exc.status)
                return None
            raise
        data = obj.get("data") if isinstance(obj, dict) else None
        return [m for m in data if isinstance(m, dict)] if isinstance(data, list) else None

    def _call(
        self,
        method: str,
        path: str,
        payload: dict | None = None,
        stream: bool = False,
        stop: threading.Event | None = None,
    ) -> Any:
        """One HTTP exchange with retries; the parsed JSON answer, or the open response when streaming.

        ``stop`` (generate's end) and close() end the retries: once set, a failure is raised at once,
        unannounced, and no retry is waited for."""
        stop = stop if stop is not None else threading.Event()
        url = self.base_url + path
        headers = self._headers()
        body = json.dumps(payload).encode("utf-8") if payload is not None else None
        attempt = 0
        while True:
            try:
                req = urllib.request.Request(url, data=body, headers=headers, method=method)
                resp = self._opener.open(req, timeout=self.timeout_s)
                if stream:
                    return resp
                with resp:
                    raw = resp.read()
                try:
                    return json.loads(raw)
                except ValueError:
                    text = raw[:200].decode("utf-8", errors="replace")
                    raise EndpointError(
                        f"The LVLM server at {url} sent a malformed answer (not JSON): {text!r}", url
                    ) from None
            except EndpointError:
                raise
            except Exception as exc:
                err, retry, wait_s = self._explain(exc, url)
                with self._stop_lock:  # checked and told together: no warning after the call has ended
                    final = not retry or attempt >= self.retries or stop.is_set() or self._closed.is_set()
                    if not final:
                        delay = wait_s if wait_s is not None else self.backoff_s * 2**attempt
                        attempt += 1
                        log.warning("%s; retry %d/%d in %.1f s", err, attempt, self.retries, delay)
                if final:
                    if attempt:
                        err.args = (f"{err} (after {attempt + 1} tries)",)
                    raise err from None
                end = time.monotonic() + delay
                while not (stop.is_set() or self._closed.is_set()) and time.monotonic() < end:
                    stop.wait(min(0.05, max(end - time.monotonic(), 0.0)))
                if stop.is_set() or self._closed.is_set():  # ended while waiting: no further try
                    raise err from None

    def _explain(self, exc: BaseException, url: str) -> tuple[EndpointError, bool, float | None]:
        """The error in words naming the URL, whether a retry may help, and how long the server asked to wait."""
        if isinstance(exc, urllib.error.HTTPError):
            status, detail = exc.code, _error_detail(exc)
            said = f" The server said: {detail}" if detail else ""
            if status in (401, 403):
                var = f"in the variable {self.api_key_env}" if self.api_key_env else "(none is configured)"
                msg = f"The LVLM server at {url} refused the request (HTTP {status}): check the API key {var}.{said}"
            elif status == 404:
                msg = (
                    f"Not found at {url} (HTTP 404): check the base URL (the API root, e.g. "
                    f"http://host:8000/v1) and the model name '{self.model}'.{said}"
                )
            elif 300 <= status < 400:
                to = exc.headers.get("Location", "?") if exc.headers else "?"
                msg = (
                    f"The LVLM server at {url} redirects to {to} (HTTP {status}); redirects are not followed."
                )
            else:
                msg = f"The LVLM server at {url} answered HTTP {status} {exc.reason}.{said}"
            after = exc.headers.get("Retry-After", "") if exc.headers else ""
            wait_s = min(float(after), 60.0) if after.isdigit() else None
            return EndpointError(msg, url, status), status == 429 or status >= 500, wait_s
        if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
            exc = exc.reason
        cannot = f"Cannot reach the LVLM server at {url}"
        if isinstance(exc, ConnectionRefusedError):
            msg, retry = f"{cannot}: connection refused. Is it running?", True
        elif isinstance(exc, socket.gaierror):  # retrying does not fix a wrong host name
            msg, retry = f"{cannot}: the host name is unknown (DNS failure). Check the address.", False
        elif isinstance(exc, TimeoutError):
            msg, retry = f"No answer from the LVLM server at {url} in {self.timeout_s:g} s (timeout).", True
        elif isinstance(exc, ssl.SSLError):
            msg, retry = f"{cannot}: TLS/SSL error ({exc}).", False
        elif isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            msg, retry = f"{cannot}: host unreachable ({exc.strerror}).", True
        elif isinstance(exc, (ConnectionError, http.client.HTTPException)):
            msg, retry = f"The connection to the LVLM server at {url} broke off ({exc!r}).", True
        elif isinstance(exc, OSError):
            msg, retry = f"{cannot}: {exc.strerror or exc}.", True
        else:
            msg, retry = f"{cannot}: {getattr(exc, 'reason', exc)}.", False
        return EndpointError(msg, url), retry, None

    def _event_pieces(self, event: str, url: str) -> Iterator[str]:
        try:
            obj = json.loads(event)
        except ValueError:
            raise EndpointError(
                f"The LVLM server at {url} sent a malformed event: {event[:200]!r}", url
            ) from None
        if isinstance(obj, dict) and obj.get("error"):
            raise EndpointError(f"The LVLM server at {url} stopped with an error: {scrub(obj['error'])}", url)
        choices = obj.get("choices") if isinstance(obj, dict) else None
        for choice in choices or []:
            piece = (choice.get("delta") or {}).get("content")
            if piece:
                yield piece


def _token_probs(choice: dict, text: str) -> list[tuple[int, float]] | None:
    """(end, probability) per token from an OpenAI-style ``choices[0].logprobs.content`` list, when the
    tokens spell the answer; None when the server sent none or something else."""
    import math

    try:
        content = choice["logprobs"]["content"]
        pieces = [str(t["token"]) for t in content]
        probs = [math.exp(float(t["logprob"])) for t in content]
    except (KeyError, TypeError, ValueError, OverflowError):
        return None
    ends = token_ends(pieces, text)
    if ends is None or not probs:
        return None
    return [(e, min(p, 1.0)) for e, p in zip(ends, probs)]


def _error_detail(exc: urllib.error.HTTPError) -> str:
    """The server's own words from an error body (JSON ``detail``/``error``/``message``, or its text)."""
    try:
        text = exc.read(2000).decode("utf-8", errors="replace").strip()
    except Exception:  # the body is a courtesy; the status says enough
        return ""
    finally:
        exc.close()
    try:
        obj = json.loads(text)
    except ValueError:
        return scrub(text[:300])
    keys = [k for k in ("detail", "error", "message") if obj.get(k)] if isinstance(obj, dict) else []
    value = obj[keys[0]] if keys else text
    return scrub(str(value.get("message", value) if isinstance(value, dict) else value)[:300])
