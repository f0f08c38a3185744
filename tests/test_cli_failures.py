"""Failures from outside the program (a full disk, images moved away) end in one `error:` line that names
the file, never a traceback, and leave the project usable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lvlmva_desktop.cli import main

REPO = Path(__file__).resolve().parents[1]
FAST = ["--set", "train.epochs=1", "--device", "cpu", "--quiet"]


def _project(tmp_path, capsys) -> Path:
    data, proj = tmp_path / "data", tmp_path / "proj"
    args = ["generate", "isic-like", str(data), "--quiet"]
    for p in ("n_train=40", "n_test=20", "size=32"):
        args += ["--param", p]
    assert main(args) == 0
    assert main(["import", str(proj), "--csv", str(data / "manifest.csv"), "--quiet"]) == 0
    capsys.readouterr()
    return proj


def test_images_moved_away_are_named_in_one_line(tmp_path, capsys):
    proj = _project(tmp_path, capsys)
    (tmp_path / "data").rename(tmp_path / "elsewhere")
    assert main(["train", str(proj), *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: Image 1 cannot be read: ")
    assert str(tmp_path / "data") in err[0] and "file not found" in err[0]
    assert "move them back, or import the images again" in err[0]
    (tmp_path / "elsewhere").rename(tmp_path / "data")  # moved back: it works
    assert main(["train", str(proj), *FAST]) == 0


CHILD = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from lvlmva_desktop.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_a_write_that_does_not_fit_on_disk_is_one_line_naming_the_file(tmp_path, capsys):
    """No file may grow past 600 kB (as on a nearly full disk): the decoded images (1.2 MB) cannot be
    written; the step fails in one line naming the file, and the project opens and works afterwards."""
    proj = _project(tmp_path, capsys)
    assert (proj / "project.sqlite").stat().st_size < 400_000
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, "600000", "train", str(proj), "--arch", "mlp", *FAST],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and len(err) == 1, done.stderr
    assert err[0].startswith("error: Could not write ") and f"in the project folder {proj}" in err[0]
    assert "File too large" in err[0] and "nothing of the step was kept" in err[0]
    assert "Could not write models/model-0001-erm.tmp" in err[0] and "Free some disk space" in err[0]
    assert not list(proj.rglob("*.tmp"))
    assert main(["train", str(proj), "--arch", "mlp", *FAST]) == 0  # with room again, the step works
    assert main(["status", str(proj)]) == 0
    assert "train failed" in capsys.readouterr().out


def _class_folders(root: Path) -> None:
    from PIL import Image

    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (8, 8), 40 * i).save(root / c / f"{i}.png")


def test_a_symlink_loop_in_a_class_folder_is_a_reported_row(tmp_path, capsys):
    root = tmp_path / "images"
    _class_folders(root)
    os.symlink("loop", root / "a" / "loop.png")  # points at itself
    os.symlink(root, root / "b" / "up")  # a link back up: not followed
    assert main(["import", str(tmp_path / "p"), "--folder", str(root), "--quiet"]) == 0
    out = capsys.readouterr()
    assert "Traceback" not in out.err and "unexpected" not in out.out
    assert (
        "a/loop.png - unreadable: a symbolic link that leads nowhere (a loop, or its target was removed)"
        in out.out
    )
    assert "6 new images added" in out.out


UNREADABLE = """
import os, sys
from lvlmva_desktop.core.data.importing import import_class_folders  # (and what it reads with) before the switch
import lvlmva_desktop.core.data.images, PIL.PngImagePlugin
if os.geteuid() == 0:  # root reads every folder: import as an ordinary user instead
    os.setgid(65534)
    os.setuid(65534)
r = import_class_folders(sys.argv[1])
print(r.summary())
"""


def test_an_unreadable_folder_is_a_reported_row_not_a_silent_gap(tmp_path):
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="lvlmva-unreadable-", dir="/tmp"))
    try:
        root = base / "images"
        _class_folders(root)
        (root / "a" / "sub").mkdir()
        for p in [base, *base.rglob("*")]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        os.chmod(root / "a" / "sub", 0)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        done = subprocess.run(
            [sys.executable, "-c", UNREADABLE, str(root)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        assert "a/sub/ - unreadable: the folder cannot be read (Permission denied)" in done.stdout
        assert done.stdout.startswith("Imported 6 images (2 classes)")
    finally:
        os.chmod(base / "images" / "a" / "sub", 0o755)
        import shutil

        shutil.rmtree(base, ignore_errors=True)
