"""`lvlmva-desktop --self-test`: headless (no display, no Qt platform), every check "ok" and exit 0; a broken
step is a FAIL line and exit 1; the temporary folder goes either way."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from lvlmva_desktop import selftest
from lvlmva_desktop.core.method import pipeline

ROOT = Path(__file__).resolve().parents[1]


def _check_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(("ok   ", "FAIL "))]


def test_self_test_passes_headlessly():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    r = subprocess.run(
        [sys.executable, "-m", "lvlmva_desktop", "--self-test"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = _check_lines(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    names = [line[5:].split(":")[0] for line in lines]
    assert names == [
        "imports",
        "demo",
        "train",
        "sample",
        "explain",
        "critique",
        "align",
        "evaluate",
        "lvlm model",
        "lvlm critique",
        "audit",
    ], r.stdout
    assert all(line.startswith("ok   ") for line in lines), r.stdout
    assert "all checks passed" in r.stdout


def test_a_broken_step_fails_with_exit_1_and_cleans_up(monkeypatch, tmp_path):
    def broken(*args, **kwargs):
        raise RuntimeError("training is broken")

    monkeypatch.setattr(pipeline, "train_original", broken)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    out = io.StringIO()
    assert selftest.run_self_test(out=out) == 1
    lines = _check_lines(out.getvalue())
    assert "FAIL train: RuntimeError: training is broken" in lines, out.getvalue()
    assert "FAIL sample: not run (model failed)" in lines  # what needs the model is not run
    assert "ok   demo" in out.getvalue() and "ok   audit" in out.getvalue()  # the rest still checked
    assert list(tmp_path.iterdir()) == []  # the temporary folder is gone
