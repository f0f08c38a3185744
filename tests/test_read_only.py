"""Archived projects: with --read-only, and on a read-only mount, the commands that read work (status, audit
--verify, show, verdict, evaluate --no-store, report --out elsewhere), a command that would change the
project is refused in words that say why, and nothing in the project changes."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from lvlmva_desktop.cli import main

FAST = ["--set", "train.epochs=1", "--set", "sampling.n=8", "--set", "align.epochs=1"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A project after the whole method, closed."""
    base = tmp_path_factory.mktemp("archived")
    data, proj = base / "data", base / "proj"
    assert main(["generate", "isic-like", str(data), "--quiet", "--param", "n_train=40", "--param", "n_test=20",
                 "--param", "size=32"]) == 0  # fmt: skip
    assert main(["import", str(proj), "--csv", str(data / "manifest.csv"), "--quiet"]) == 0
    for step in ("train", "sample", "explain"):
        assert main([step, str(proj), "--quiet", "--device", "cpu", *FAST]) == 0
    assert main(["critique", str(proj), "--quiet", "--critic", "simulated"]) == 0
    assert main(["align", str(proj), "--quiet", "--device", "cpu", *FAST]) == 0
    return proj


def _fingerprint(proj: Path) -> dict[str, str]:
    """Every file's content (SQLite's empty shared-memory and log files of a reader left out)."""
    return {
        p.relative_to(proj).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(proj.rglob("*"))
        if p.is_file()
        and p.name != "project.lock"
        and not (p.name.endswith(("-shm", "-wal")) and p.stat().st_size in (0, 32768))
    }


def _reading_commands(proj: Path, out: Path, extra: list[str], capsys) -> dict[str, str]:
    from lvlmva_desktop.core.store.project import Project

    with Project.open(proj, read_only=True) as p:
        sample = int(p.explanation(p.latest_id("explanations"))[1]["sample_ids"][0])
    said = {}
    for name, args in {
        "status": ["status", str(proj)],
        "verify": ["audit", str(proj), "--verify"],
        "show": ["show", str(proj), "--sample", str(sample)],
        "verdict": ["verdict", str(proj)],
        "evaluate": [
            "evaluate",
            str(proj),
            "--no-store",
            "--quiet",
            "--device",
            "cpu",
            "--set",
            "evaluate.min_group_size=1",
            "--set",
            "evaluate.n_attribution_images=4",
        ],  # fmt: skip
        "report": ["report", str(proj), "--out", str(out), "--device", "cpu", "--quiet"],
    }.items():
        rc = main([*args, *extra])
        got = capsys.readouterr()
        assert rc == 0, (name, got.err)
        said[name] = got.out + got.err
    assert "audit log intact" in said["verify"]
    assert "--- verdicts ---" in said["show"] and "sample " in said["verdict"]
    assert "(not stored: --no-store)" in said["evaluate"] and "model 2: accuracy" in said["evaluate"]
    assert "not recorded in its audit log" in said["report"] and (out / "report.html").is_file()
    return said


def test_read_only_by_request_reads_everything_and_changes_nothing(finished, tmp_path, capsys):
    before = _fingerprint(finished)
    _reading_commands(finished, tmp_path / "report", ["--read-only"], capsys)
    assert main(["train", str(finished), "--read-only", "--quiet", "--device", "cpu", *FAST]) == 2
    err = capsys.readouterr().err
    assert "opened read-only (--read-only" in err and "Close the other LVLM-VA window" not in err
    assert _fingerprint(finished) == before


def _read_only_mount(source: Path, target: Path) -> bool:
    target.mkdir()
    if shutil.which("mount") is None:
        return False
    bind = subprocess.run(["mount", "--bind", str(source), str(target)], capture_output=True)
    if bind.returncode != 0:
        return False
    ro = subprocess.run(["mount", "-o", "remount,ro,bind", str(target)], capture_output=True)
    if ro.returncode != 0:
        subprocess.run(["umount", str(target)], capture_output=True)
        return False
    return True


def test_a_read_only_mount_is_opened_read_only_and_says_so(finished, tmp_path, capsys):
    copy = tmp_path / f"copy-{uuid.uuid4().hex[:6]}"
    shutil.copytree(finished.parent, copy)  # the project and its images (it refers to them relatively)
    where = tmp_path / "mnt"
    if not _read_only_mount(copy, where):
        pytest.skip("this machine does not let the tests mount a folder read-only")
    mount = where / finished.name
    try:
        before = _fingerprint(mount)
        said = _reading_commands(mount, tmp_path / "report", [], capsys)
        assert "cannot be written (a read-only copy or mount)" in said["status"]
        assert main(["train", str(mount), "--quiet", "--device", "cpu", *FAST]) == 2
        err = capsys.readouterr().err
        assert "folder cannot be written (a read-only copy or mount), so nothing can be changed" in err
        assert "damaged" not in err and "Close the other LVLM-VA window" not in err
        assert _fingerprint(mount) == before
    finally:
        subprocess.run(["umount", str(where)], capture_output=True)
