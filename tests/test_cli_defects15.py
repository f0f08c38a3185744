"""Issue 15's small CLI defects, each as the user met it: the verdict accuracy over no decided verdict, what
`show` says of an undecided verdict, the progress estimate across the critic's stages, `... | head`, the
retry warnings after the final error, and the empty memory field of `lvlm-check` against a server.

The LVLM here is a real local HTTP server speaking the OpenAI chat-completions protocol (http.server on
loopback), answering what the test needs: prose in which no verdict can be read, or HTTP errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from test_cli import explained_cli_project

from lvlmva_desktop.cli import main
from lvlmva_desktop.cli.common import Bar

REPO = Path(__file__).resolve().parents[1]
FAST = ["--set", "train.epochs=1", "--set", "sampling.n=8", "--set", "evaluate.n_attribution_images=4"]
UNREADABLE = "I cannot tell."


class _Server:
    """An OpenAI-compatible server on loopback. mode "unreadable": every answer is prose naming no verdict;
    mode "fail": the first chat request gets a malformed answer (not JSON: no retry can mend it), every
    later one fails slowly (HTTP 500 after ``slow_s``, which the program retries), as an overloaded
    server behind a proxy does."""

    def __init__(self, mode: str, slow_s: float = 0.5) -> None:
        self.mode, self.slow_s, self.posts = mode, slow_s, 0
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, obj: dict | None) -> None:
                body = json.dumps(obj).encode() if obj is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._send(200, {"object": "list", "data": [{"id": "m", "object": "model"}]})

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    outer.posts += 1
                    k = outer.posts
                if outer.mode == "fail" and k == 1:  # not JSON: a failure no retry mends
                    body = b"<html>Bad gateway</html>"
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if outer.mode == "fail":
                    time.sleep(outer.slow_s)
                    self._send(500, {"error": "overloaded"})
                    return
                message = {"role": "assistant", "content": UNREADABLE}
                usage = {"prompt_tokens": 5, "completion_tokens": 3}
                self._send(200, {"choices": [{"message": message, "finish_reason": "stop"}], "usage": usage})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def explained(tmp_path_factory) -> Path:
    """A tiny project trained, sampled (8 images) and explained through the CLI, built once."""
    return explained_cli_project(tmp_path_factory.mktemp("defects15"), FAST)


@pytest.fixture
def proj(explained, tmp_path) -> Path:
    """A copy of the explained project (and of its images, which it finds beside it) for one test."""
    shutil.copytree(explained.parent, tmp_path / "copy")
    return tmp_path / "copy" / explained.name


def _cli(*args: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "lvlmva_desktop.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, **kw)


def _first_sample(proj: Path, capsys) -> int:
    capsys.readouterr()
    assert main(["verdict", str(proj)]) == 0
    return int(capsys.readouterr().out.splitlines()[0].split()[1].rstrip(":"))


# -- 1 and 2: every verdict undecided ---------------------------------------------------------------
def test_no_accuracy_over_no_decided_verdict_and_show_says_why_it_is_undecided(proj, capsys):
    with _Server("unreadable") as server:
        args = ["critique", str(proj), "--quiet", "--critic", "lvlm", "--endpoint", server.url]
        assert main([*args, "--lvlm-model", "m"]) == 0
    out = capsys.readouterr().out
    assert "'spurious': 0, 'relevant': 0, 'undecided': 32" in out, out
    line = [x for x in out.splitlines() if x.startswith("Verdict accuracy against the ground truth:")]
    assert line == ["Verdict accuracy against the ground truth: n/a (no decided verdicts: every segment is "
                    "undecided, nothing to compare)"], out  # fmt: skip
    assert "0.000" not in out

    sample = _first_sample(proj, capsys)
    assert main(["show", str(proj), "--sample", str(sample)]) == 0
    shown = capsys.readouterr().out
    rows = [x for x in shown.splitlines() if x.startswith("segment ")]
    assert len(rows) == 4, shown
    for row in rows:
        assert "undecided" in row and "decided by" not in row, row
        assert row.endswith(
            "(the critic gave no verdict: no verdict for this segment could be read from its answer)"
        ), row

    # an expert's word on one segment: the critic's figure is a number again, and says undecided counts wrong
    assert main(["verdict", str(proj), "--sample", str(sample), "--segment", "1", "--set", "spurious"]) == 0
    assert main(["show", str(proj), "--sample", str(sample)]) == 0
    shown = capsys.readouterr().out
    assert "segment 1: spurious" in shown and "(decided by expert " in shown


def test_the_expert_critic_with_no_verdicts_has_no_accuracy_either(proj, capsys):
    assert main(["critique", str(proj), "--quiet", "--critic", "expert"]) == 0
    out = capsys.readouterr().out
    assert "Verdict accuracy against the ground truth: n/a (no decided verdicts" in out, out
    sample = _first_sample(proj, capsys)
    assert main(["show", str(proj), "--sample", str(sample)]) == 0
    rows = [x for x in capsys.readouterr().out.splitlines() if x.startswith("segment ")]
    assert rows and all(r.endswith("(the critic gave no verdict)") for r in rows), rows


def test_a_decided_critique_still_tells_its_accuracy(proj, capsys):
    args = ["critique", str(proj), "--quiet", "--critic", "simulated", "--verdict-accuracy", "1.0"]
    assert main(args) == 0
    out = capsys.readouterr().out
    line = [x for x in out.splitlines() if x.startswith("Verdict accuracy against the ground truth:")]
    assert len(line) == 1 and float(line[0].split(":")[1].split()[0]) > 0.5, out


def test_run_tells_no_accuracy_when_the_critic_decided_nothing(proj, capsys):
    """`run` with the expert's verdicts, none entered: the results table has no 0.000 verdict accuracy."""
    fast = [*FAST, "--set", "align.epochs=1", "--set", "evaluate.min_group_size=1"]
    assert main(["run", str(proj), "--critic", "expert", "--quiet", "--device", "cpu", *fast]) == 0
    out = capsys.readouterr().out
    line = [x for x in out.splitlines() if x.startswith("verdict accuracy of the critic")]
    assert line == ["verdict accuracy of the critic: n/a (no decided verdicts: every segment is undecided, "
                    "nothing to compare)"], out  # fmt: skip


# -- 3: the progress estimate across stages ---------------------------------------------------------
class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_the_time_left_is_measured_per_stage_never_across_them():
    """The LVLM critic's critic pass goes from 5 % to 100 % slowly (1 % a second), then its judge pass
    starts again at 5 % and goes ten times faster. After the restart the estimate is unknown until the
    judge's own pace is measured, then follows that pace (about 0.95 % of the bar in 0.1 s)."""
    clock = _Clock()
    bar = Bar(quiet=True, clock=clock)
    state = bar.state
    sub = state.child(0.05, 1.0)  # as run_critique maps the critic
    for k in range(0, 101):  # the critic pass: 100 s
        sub.progress(k, 100, f"{k}/100 answers")
        if k == 50:
            assert bar.seconds_left is not None and 45 <= bar.seconds_left <= 55, bar.seconds_left
        clock.t += 1.0
    assert bar.seconds_left == 0.0
    seen = []
    for k in range(0, 101):  # the judge pass over the same share of the bar: 10 s
        sub.progress(k, 100, f"{k}/100 answers")
        seen.append((k, bar.seconds_left))
        clock.t += 0.1
    assert bar.stage == 2
    # right after the restart: no estimate (the old stage's pace says nothing of this one)
    assert all(left is None for k, left in seen[:5]), seen[:5]
    # once known, from the judge's pace: at k, about (100 - k) * 0.1 s, never the minutes of the critic's
    known = [(k, left) for k, left in seen if left is not None and k < 100]
    assert known and known[0][0] <= 40, seen
    for k, left in known:
        assert abs(left - (100 - k) * 0.1) <= 1.0, (k, left)


def test_the_bar_shows_the_stage_estimate_not_tqdm_average(capsys):
    """The shown line carries the per-stage estimate; after the restart it says the time left is unknown
    (tqdm's own "remaining", from the average pace since the start, said over an hour here)."""
    import io

    clock = _Clock()
    out = io.StringIO()
    bar = Bar(quiet=False, clock=clock, file=out)
    try:
        for k in range(0, 101):
            bar.state.progress(k, 100, "critic")
            clock.t += 3.0
        bar.state.progress(5, 100, "judge")
        line = str(bar.bar)
        assert "time left unknown" in line and "judge" in line, line
        for k in range(6, 60):
            clock.t += 0.3
            bar.state.progress(k, 100, "judge")
        line = str(bar.bar)
        assert bar.left_text() in line and bar.left_text().startswith("about 0:1"), line
    finally:
        bar.close()


# -- 4: a pipe closed early -------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["show", "verdict", "settings", "status"])
def test_a_closed_pipe_ends_the_command_quietly(explained, command, capsys):
    """`lvlmva show ... | head`: the reader closes the pipe before the command writes (as `head` does once
    it has its lines); the command ends with exit code 0 and nothing on stderr."""
    args = [] if command == "settings" else [str(explained)]
    if command == "show":  # an image of the alignment set, as the refusal for an image outside it lists
        assert main(["show", str(explained), "--sample", "99999", "--read-only"]) == 2
        sample = capsys.readouterr().err.split("its images are ")[1].split(",")[0].strip()
        args += ["--sample", sample, "--read-only"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lvlmva_desktop.cli", command, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    proc.stdout.close()  # before the program (still importing) writes a byte
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0, err
    assert err == "", err


# -- 5: no retry warning after the final error -----------------------------------------------------
def test_the_error_line_is_the_last_thing_said_after_a_server_failure(proj):
    """8 requests, 4 at a time: the first fails for good at once while the other 3 in flight still wait
    for slow HTTP 500s, after which they would retry (and the 4 queued ones would start): the command has
    failed by then, so nothing of the kind may follow its error line."""
    with _Server("fail", slow_s=1.0) as server:
        args = ["critique", str(proj), "--quiet", "--critic", "lvlm", "--endpoint", server.url]
        done = _cli(*args, "--lvlm-model", "m")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert lines[-1].startswith("error: The LVLM server at ") and "(not JSON)" in lines[-1], done.stderr
    assert not [x for x in lines if "retry" in x], done.stderr  # the failed call's requests retry no more
    assert server.posts <= 4, server.posts  # the queued requests were never sent


# -- 6: lvlm-check's memory field against a server -------------------------------------------------
def test_lvlm_check_on_a_server_says_the_memory_is_not_reported(capsys):
    with _Server("unreadable") as server:
        main(["lvlm-check", "--endpoint", server.url, "--lvlm-model", "m"])
    out = capsys.readouterr().out
    line = [x for x in out.splitlines() if "memory:" in x]
    assert len(line) == 1 and "memory: not reported by the server" in line[0], out
