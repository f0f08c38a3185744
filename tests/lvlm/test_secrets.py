"""No secret in anything stored (core/runtime/secrets.py): a canary key is planted in every path a key can take (a
URL's password, a server that echoes the Authorization header in its error, a key given where a variable
name belongs, the environment) and then searched for in the project folder (database, log, files), the
audit report, the settings folder and everything printed."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lvlmva_desktop.cli import main
from lvlmva_desktop.core.runtime.secrets import REDACTED, looks_like_key, scrub, without_credentials
from lvlmva_desktop.lvlm.backend import LVLMError
from lvlmva_desktop.lvlm.config import LVLMConfig
from lvlmva_desktop.lvlm.endpoint import EndpointBackend

CANARY = "sk-canary-7f3a9b2c4d5e6f708192a3b4c5d6e7f8"
PLAIN_CANARY = "Kq7cAnArY9v2LmXw4Rt8Zp1Ns6Yb"  # no prefix: found only as the value this process read


class EchoServer:
    """Answers every request with HTTP 400 and an error that repeats the request's Authorization header
    (as some proxies and servers do)."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                said = f"bad request; you sent Authorization: {self.headers.get('Authorization', '')}"
                body = json.dumps({"error": {"message": said, "key": self.headers.get("Authorization", "")}})
                data = body.encode()
                self.send_response(400)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _handle

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _everything_under(folder: Path) -> bytes:
    return b"\n".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def test_scrub_removes_keys_tokens_and_passwords_and_keeps_hashes():
    digest = "3f2a" + "0" * 60
    text = (
        f"Authorization: Bearer {CANARY}; api_key=abcd1234efgh, "
        f"http://bob:hunter22@host:8000/v1 token eyJhbGciOi.eyJzdWIiOiIx.SflKxwRJSM {digest}"
    )
    out = scrub(text)
    for secret in (CANARY, "abcd1234efgh", "hunter22", "bob:", "eyJhbGciOi"):
        assert secret not in out
    assert digest in out and "host:8000/v1" in out and REDACTED in out
    assert without_credentials("http://bob:hunter22@host:8000/v1") == "http://host:8000/v1"
    assert not looks_like_key("SITE_LLM_KEY") and looks_like_key(CANARY) and looks_like_key(PLAIN_CANARY)


def test_a_url_with_credentials_or_a_key_as_variable_name_is_refused_without_echoing_it():
    for bad in (
        LVLMConfig(kind="endpoint", base_url=f"http://user:{CANARY}@127.0.0.1:9/v1", model="m"),
        LVLMConfig(kind="endpoint", base_url="http://127.0.0.1:9/v1", model="m", api_key_env=CANARY),
    ):
        with pytest.raises(LVLMError) as e:
            bad.validate()
        assert CANARY not in str(e.value)
    with pytest.raises(LVLMError) as e:
        EndpointBackend(f"http://user:{CANARY}@10.255.255.1:9/v1", "m")
    assert CANARY not in str(e.value) and "must not carry a user name or password" in str(e.value)


def test_the_canary_key_is_found_nowhere(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("LVLMVA_CANARY_KEY", PLAIN_CANARY)
    data, proj = tmp_path / "data", tmp_path / "proj"
    printed = []
    fast = ["--set", "train.epochs=1", "--set", "sampling.n=4", "--set", "evaluate.min_group_size=1"]

    def run(*args: str) -> int:
        rc = main(list(args))
        out = capsys.readouterr()
        printed.append(out.out + out.err)
        return rc

    assert run("generate", "isic-like", str(data), "--quiet", "--param", "n_train=24", "--param", "n_test=8",
               "--param", "size=32") == 0  # fmt: skip
    assert run("import", str(proj), "--csv", str(data / "manifest.csv"), "--quiet") == 0
    for step in ("train", "sample", "explain"):
        assert run(step, str(proj), "--quiet", "--device", "cpu", *fast) == 0
    server = EchoServer()
    try:
        lvlm = ["--critic", "lvlm", "--lvlm-model", "m", "--quiet"]
        # a password in the URL: refused before anything is recorded or sent
        assert (
            run("critique", str(proj), *lvlm, "--endpoint", server.url.replace("//", f"//u:{CANARY}@")) == 2
        )
        assert (
            run("lvlm-check", "--endpoint", f"http://u:{CANARY}@10.255.255.1:9/v1", "--lvlm-model", "m") == 2
        )
        # the key itself where its variable's name belongs: refused
        assert run("critique", str(proj), *lvlm, "--endpoint", server.url, "--api-key-env", CANARY) == 2
        assert (
            run("lvlm-check", "--endpoint", server.url, "--lvlm-model", "m", "--api-key-env", PLAIN_CANARY)
            == 2
        )
        # a server that echoes the key it was sent: the critique fails, and its error is stored
        assert (
            run("critique", str(proj), *lvlm, "--endpoint", server.url, "--api-key-env", "LVLMVA_CANARY_KEY")
            == 2
        )
        assert (
            run(
                "lvlm-check",
                "--endpoint",
                server.url,
                "--lvlm-model",
                "m",
                "--api-key-env",
                "LVLMVA_CANARY_KEY",
            )
            == 2
        )
    finally:
        server.close()
    assert "HTTP 400" in printed[-2] and REDACTED in printed[-2]  # the error is told, the key is not
    assert run("report", str(proj), "--out", str(tmp_path / "report"), "--device", "cpu") == 0
    assert run("audit", str(proj), "--verify") == 0
    assert run("status", str(proj)) == 0
    from lvlmva_desktop.core.store.project import Project

    with Project.open(proj, read_only=True) as p:
        failed = p.db.execute("SELECT error FROM runs WHERE kind='critique'").fetchall()
        assert len(failed) == 1 and "HTTP 400" in failed[0]["error"]
    haystacks = {
        "the project folder (database, audit log, files)": _everything_under(proj),
        "the report": _everything_under(tmp_path / "report"),
        "the settings folder": _everything_under(tmp_path / "config")
        if (tmp_path / "config").exists()
        else b"",
        "what was printed": "\n".join(printed).encode(),
    }
    for where, hay in haystacks.items():
        for key in (CANARY, PLAIN_CANARY):
            assert key.encode() not in hay, f"{key} found in {where}"
