"""One writer per project, with real processes: a second process is refused (saying who holds the
project) or reads it read-only; within one process the lock is shared; it goes with the last close and
with a SIGKILLed holder; and no attempt ever damages the database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from fixtures.crash import REPO, query

from lvlmva_desktop.cli import main
from lvlmva_desktop.core.data.demo import create_demo_project
from lvlmva_desktop.core.store.lock import LOCK_FILE, ProjectLocked, held_here
from lvlmva_desktop.core.store.project import Project, ProjectError, current_user

HOLD = """
import sys, time
from pathlib import Path
from lvlmva_desktop.core.store.project import Project
p = Project.open(sys.argv[1])
Path(sys.argv[2]).write_text("held")
for i in range(int(sys.argv[3])):  # write while a second process tries its luck
    p.set_class_descriptions({c: f"description {i} of {c}" for c in p.classes})
Path(sys.argv[2] + ".done").write_text("written")
time.sleep(float(sys.argv[4]))
p.close()
"""

SECOND = """
import json, sys
from lvlmva_desktop.core.store.project import Project, ProjectError
out = {}
try:
    Project.open(sys.argv[1]).close()
    out["opened"] = True
except ProjectError as e:
    out["refused"] = str(e)
    out["kind"] = type(e).__name__
if len(sys.argv) > 2:
    with Project.open(sys.argv[1], read_only=True) as r:
        out["samples"] = len(r.samples())
        out["descriptions"] = r.class_descriptions()[0]
        out["writes"] = []
        for name, write in [
            ("descriptions", lambda: r.set_class_descriptions({c: "x" for c in r.classes})),
            ("run", lambda: r.run("train", {}).__enter__()),
            ("template", lambda: r.save_prompt_template("critic.j2", "text")),
            ("cache", lambda: r.cache_put("k", {})),
        ]:
            try:
                write()
                out["writes"].append("written")
            except ProjectError as e:
                out["writes"].append(str(e))
print(json.dumps(out))
"""


def _child(code: str, *args: str, wait: bool = True):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-c", code, *map(str, args)]
    if not wait:
        return subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _hold(root, tmp_path, writes: int = 0, seconds: float = 600, writes_done: bool = True):
    mark = tmp_path / f"held-{time.monotonic_ns()}"
    proc = _child(HOLD, root, mark, writes, seconds, wait=False)
    t0 = time.monotonic()
    while not (mark.parent / (mark.name + (".done" if writes_done else ""))).exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() - t0 < 60
        time.sleep(0.02)
    return proc


def _intact(root) -> None:
    assert query(root, "PRAGMA integrity_check") == [("ok",)]


@pytest.fixture
def root(tmp_path):
    return create_demo_project(tmp_path / "proj", n_train=16, n_test=8, size=32)


def test_second_process_is_refused_with_who_holds_it_and_can_read_only(root):
    with Project.open(root) as p:
        version = p.class_descriptions()[0]
        runs = p.db.execute("SELECT count(*) FROM runs").fetchone()[0]
        got = _child(SECOND, root, "read-only")
        assert got["kind"] == "ProjectLocked" and "opened" not in got
        assert got["refused"].startswith("This project is open in another LVLM-VA window or command")
        assert f"user {current_user()}, pid {os.getpid()}, since " in got["refused"]
        assert got["refused"].endswith("Close it there, or open it read-only.")
        # read-only: it reads what the holder wrote, and every write is refused in words
        assert got["samples"] == len(p.samples()) == 24 and got["descriptions"] == version
        assert len(got["writes"]) == 4 and all(
            "read-only" in w and "nothing can be changed" in w for w in got["writes"]
        )
        # the holder was not disturbed
        assert p.db.execute("SELECT count(*) FROM runs").fetchone()[0] == runs
        assert p.class_descriptions()[0] == version
        p.set_class_descriptions({c: "still writable here" for c in p.classes})
    _intact(root)
    assert _child(SECOND, root) == {"opened": True}  # released on close


def test_the_command_line_refuses_in_one_line_and_status_reads_read_only(root, tmp_path, capsys):
    proc = _hold(root, tmp_path)
    try:
        assert main(["train", str(root), "--quiet", "--device", "cpu"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: This project is open in another LVLM-VA window")
        assert f"pid {proc.pid}," in err[0]
        assert main(["status", str(root)]) == 0
        out = capsys.readouterr().out
        assert "Showing it read-only" in out and "train: 16 images" in out
    finally:
        proc.kill()
        proc.wait()
    _intact(root)


def test_the_lock_is_shared_within_a_process_and_goes_with_the_last_close(root):
    """The GUI opens the window's Project and one per job thread on one folder at once."""
    a = Project.open(root)
    opened, close_b = threading.Event(), threading.Event()

    def job() -> None:  # another Project, another thread, the same process: shares the lock
        b = Project.open(root)
        opened.set()
        close_b.wait(60)
        b.close()

    t = threading.Thread(target=job)
    t.start()
    assert opened.wait(60)
    assert held_here(root)
    assert _child(SECOND, root)["kind"] == "ProjectLocked"
    a.close()
    a.close()  # closing twice gives back one share only
    assert held_here(root) and _child(SECOND, root)["kind"] == "ProjectLocked"
    close_b.set()
    t.join()
    assert not held_here(root)
    assert _child(SECOND, root) == {"opened": True}
    assert (root / LOCK_FILE).read_bytes() == b""  # the holder's description goes with the lock


def test_a_killed_holder_releases_the_lock_and_its_writes_are_intact(root, tmp_path):
    proc = _hold(root, tmp_path, writes=20)
    with pytest.raises(ProjectLocked, match=f"pid {proc.pid},") as e:
        Project.open(root)
    assert e.value.holder["pid"] == proc.pid and e.value.holder["user"] == current_user()
    with Project.open(root, read_only=True) as r:
        assert r.class_descriptions()[0] == 21  # the demo's own version plus the holder's 20
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL
    with Project.open(root) as p:  # the kernel dropped the dead holder's lock
        assert p.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert p.class_descriptions()[1]["benign"] == "description 19 of benign"


def test_attempts_while_the_holder_writes_never_damage_the_database(root, tmp_path):
    writer = _hold(root, tmp_path, writes=300, seconds=0, writes_done=False)  # holds it, now writing
    refused = reads = 0
    seen: list[int] = []
    while writer.poll() is None:
        try:
            Project.open(root).close()
        except ProjectLocked:
            refused += 1
        else:
            continue  # between the writer's start and its lock, or after its close
        with Project.open(root, read_only=True) as r:
            seen.append(r.class_descriptions()[0] or 0)
            reads += 1
    assert writer.returncode == 0, writer.stderr.read()
    assert refused >= 3 and reads == refused
    assert seen == sorted(seen)  # every read saw a committed state, never going back
    with Project.open(root) as p:
        assert p.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert p.class_descriptions()[0] == 301


def test_an_old_project_gets_the_run_columns_and_its_dead_run_marked_interrupted(root):
    import sqlite3

    con = sqlite3.connect(root / "project.sqlite")
    for col in ("pid", "host", "process"):
        con.execute(f"ALTER TABLE runs DROP COLUMN {col}")  # as a project made before this change
    con.execute(
        "INSERT INTO runs (kind, status, started, user, settings) VALUES ('train', 'running', 1.0, 'x', '{}')"
    )
    con.commit()
    con.close()
    with Project.open(root, read_only=True) as r:  # read-only changes nothing, not even the schema
        assert r.db.execute("SELECT status FROM runs").fetchone()[0] == "running"
    assert "pid" not in {c[1] for c in query(root, "PRAGMA table_info(runs)")}
    with Project.open(root) as p:
        cols = {c[1] for c in p.db.execute("PRAGMA table_info(runs)")}
        assert {"pid", "host", "process"} <= cols
        row = p.db.execute("SELECT * FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        assert row["status"] == "interrupted" and row["error"].startswith("interrupted:")
        with p.run("evaluate", {}) as run:
            pass
        new = p.get_run(run.id)
        assert new["pid"] == os.getpid() and new["process"] and new["host"]
    with Project.open(root) as p:  # our own finished runs are never touched
        assert p.get_run(run.id)["status"] == "finished"


def test_a_read_only_project_that_is_missing_says_so(tmp_path):
    with pytest.raises(ProjectError, match="not an LVLM-VA project"):
        Project.open(tmp_path, read_only=True)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_inherit_the_writer_lock(tmp_path):
    """The child must be refused (the parent writes), and closing its inherited copy must not free the
    parent's lock."""
    from lvlmva_desktop.core.store import lock as lock_mod

    root = tmp_path / "p"
    Project.create(root, "p", ["a", "b"], (8, 8), 1).close()
    parent = Project.open(root)
    token = lock_mod.PROCESS_TOKEN
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what happened through the pipe, then leave without cleanup
        os.close(r)
        out = []
        try:
            Project.open(root)
            out.append("opened")
        except ProjectError:
            out.append("refused")
        out.append("new-token" if lock_mod.PROCESS_TOKEN != token else "same-token")
        parent.close()  # its inherited copy
        os.write(w, " ".join(out).encode())
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    said = os.read(r, 100).decode()
    os.close(r)
    assert said == "refused new-token"
    # the parent still holds the lock: a third process is refused
    code = "import sys; from lvlmva_desktop.core.store.project import Project\ntry:\n    Project.open(sys.argv[1]); print('opened')\nexcept Exception as e:\n    print(type(e).__name__)"
    got = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, cwd=REPO)
    assert got.stdout.strip() == "ProjectLocked", got.stderr
    parent.close()


def test_deleting_the_lock_file_does_not_let_a_second_writer_in(root, tmp_path):
    """The lock is held by the operating system on the project folder, not by the lock file's existence:
    with project.lock removed (by a person or a cleaning script), a second process is still refused, and
    nothing it could write (a false "interrupted" record, a second end of the holder's run) is written."""
    proc = _hold(root, tmp_path)
    try:
        (root / LOCK_FILE).unlink()
        got = _child(SECOND, root)
        assert got["kind"] == "ProjectLocked" and "opened" not in got
        assert "lock file was removed" in got["refused"]
        with Project.open(root, read_only=True) as r:
            assert r.db.execute("SELECT count(*) FROM runs WHERE status='interrupted'").fetchone()[0] == 0
    finally:
        proc.kill()
        proc.wait()
    assert _child(SECOND, root) == {"opened": True}  # the holder died: the folder's lock went with it
    _intact(root)
