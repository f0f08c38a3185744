"""The packaged program (issue 6): built in a fresh virtual environment by packaging/build.sh, then run.

Slow (a fresh environment with torch, then PyInstaller: about 15 minutes on 2 cores), so it runs only
when LVLMVA_TEST_BUNDLE=1: `.ci/run` does that in its second step. LVLMVA_BUNDLE=/path/to/lvlmva-desktop
tests an already built program instead of building one.

Each run gets an empty HOME, its own temp folder and a read-only working folder, and runs under strace:
every file it creates, writes, renames or removes must lie in the project folder, the user's settings
folder or the temp folder, and it may try no network connection at all.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.syscalls import outside, read_log, strace_works, traced

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.bundle,
    pytest.mark.skipif(
        os.environ.get("LVLMVA_TEST_BUNDLE") != "1" and not os.environ.get("LVLMVA_BUNDLE"),
        reason="builds the packaged program (~15 min): LVLMVA_TEST_BUNDLE=1 (.ci/run's second step)",
    ),
]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Iterator[Path]:
    given = os.environ.get("LVLMVA_BUNDLE")
    if given:
        yield Path(given).resolve()
        return
    out = tmp_path_factory.mktemp("package")
    r = subprocess.run(
        ["bash", str(REPO / "packaging" / "build.sh"), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    print(r.stdout[-3000:])
    assert r.returncode == 0, f"packaging/build.sh failed:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    app = out / "dist" / "lvlmva-desktop" / "lvlmva-desktop"
    assert app.is_file() and os.access(app, os.X_OK)
    yield app
    shutil.rmtree(out, ignore_errors=True)  # about 11 GB: the environment, the work files, the build


def _sandbox(tmp_path: Path) -> dict[str, Path]:
    box = {k: tmp_path / k for k in ("home", "tmp", "cwd")}
    for p in box.values():
        p.mkdir()
    return box


def _env(box: dict[str, Path], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "QT_", "HF_", "LVLMVA_"))}
    env.update(HOME=str(box["home"]), TMPDIR=str(box["tmp"]), **extra)
    return env


def _run(app: Path, args: list[str], box: dict[str, Path], env: dict[str, str], timeout: int):
    """Run the program with a read-only working folder, under strace where it works."""
    log = box["tmp"].parent / "strace.log"
    cmd = [str(app), *args]
    if strace_works():
        cmd = traced(cmd, log)
    box["cwd"].chmod(0o555)
    try:
        r = subprocess.run(cmd, cwd=box["cwd"], env=env, capture_output=True, text=True, timeout=timeout)
    finally:
        box["cwd"].chmod(0o755)
    trace = read_log(log, box["cwd"]) if log.exists() else None
    return r, trace


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}  # fmt: skip


def test_self_test_passes_offline_and_writes_only_to_temp(bundle, tmp_path):
    box = _sandbox(tmp_path)
    before = _snapshot(bundle.parent)
    r, trace = _run(bundle, ["--self-test"], box, _env(box), timeout=900)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith(("ok ", "FAIL"))]
    assert r.returncode == 0, f"self-test failed:\n{r.stdout}\n{r.stderr[-4000:]}"
    assert lines and all(ln.startswith("ok ") for ln in lines), r.stdout
    assert any("audit" in ln for ln in lines) and any("LVLM" in ln or "lvlm" in ln for ln in lines), r.stdout
    assert _snapshot(bundle.parent) == before, "the program changed its own folder"
    # nothing in HOME at all: the self-test has no project or settings of the user's to touch
    assert [p for p in box["home"].rglob("*")] == []
    if trace is None:
        pytest.skip("strace cannot trace here: the writes were checked through HOME and the bundle only")
    assert trace.connections == [], trace.connections
    assert outside(trace.written, [box["tmp"]]) == []
    assert any(box["tmp"] in p.parents for p in trace.written), "the trace saw no writes at all"


def test_window_starts_before_torch_and_writes_only_where_allowed(bundle, tmp_path):
    box = _sandbox(tmp_path)
    data = box["home"] / ".local" / "share"
    config = box["home"] / ".config"
    report = box["tmp"] / "startup.json"
    env = _env(box, QT_QPA_PLATFORM="offscreen")
    t0 = time.time()
    # the first start: the demo project is built in the user's data folder, then shown
    r, trace = _run(bundle, ["--device", "cpu", "--measure-startup", str(report)], box, env, timeout=900)
    assert r.returncode == 0, f"{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    out = json.loads(report.read_text())
    assert "error" not in out, out
    assert out["imported_at_first_paint"] == [], "torch was imported before the window appeared"
    assert out["window_painted"] < out["project_open"] <= out["first_thumbnails"]
    assert out["images"] > 0 and out["visible_cells"] > 0
    print(f"packaged program, first start: window painted {out['window_painted'] - t0:.2f} s")
    project = data / "lvlmva-desktop" / "demo-project"
    assert (project / "project.json").is_file()
    settings = config / "LVLM-VA"
    assert settings.is_dir(), sorted(str(p) for p in box["home"].rglob("*"))
    stray = [p for p in box["home"].rglob("*") if p.is_file() and project not in p.parents
             and settings not in p.parents]  # fmt: skip
    assert stray == [], stray
    # the command line inside the packaged program: the demo project's audit log verifies
    v = subprocess.run([str(bundle), "--cli", "audit", str(project), "--verify"], env=env, cwd=box["tmp"],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert v.returncode == 0, f"{v.stdout}\n{v.stderr[-3000:]}"
    if trace is None:
        pytest.skip("strace cannot trace here: the writes were checked through HOME only")
    assert trace.connections == [], trace.connections
    # the parents of the demo project and of the settings folder are created once, as empty folders
    parents = (box["home"] / ".local", data, data / "lvlmva-desktop", config)
    bad = outside(trace.written, [project, settings, box["tmp"]], exact=parents)
    assert bad == [], bad
    assert any(project in p.parents for p in trace.written), "the trace saw no writes to the demo project"
