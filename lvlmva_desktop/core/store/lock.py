"""One writer per project: an exclusive advisory lock on ``project.lock`` (and, on POSIX, on the project
folder itself, so that deleting the lock file does not let a second writer in), held per process.

Two programs writing one project would interleave runs and model versions, and the second would take the
first's running steps for interrupted ones. So the first process to open a project for writing holds an
exclusive lock (``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows) until its last Project on that
folder closes; the kernel drops it when the process dies, even by SIGKILL. A second process is refused
with who holds it, or opens the project read-only.

The lock is reference-counted within a process: the GUI opens several Project objects on one folder at
once (the window's connection plus one per job thread), and they must share the process's lock rather
than fight over it (flock locks conflict between two open() calls even in one process).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from lvlmva_desktop.core.store.project import ProjectError

log = logging.getLogger(__name__)

LOCK_FILE = "project.lock"
# Windows locks a byte range and then refuses reads of it to other processes: lock one byte far past the
# holder's description at the start of the file, so a refused opener can still read who holds it.
_WIN_LOCK_OFFSET = 1 << 20

# Identifies this process in run rows: a pid alone may be reused by a later process after a crash.
PROCESS_TOKEN = uuid.uuid4().hex


class ProjectLocked(ProjectError):
    """Another process holds the project for writing; ``holder`` says who (user, pid, host, since)."""

    def __init__(self, message: str, holder: dict) -> None:
        super().__init__(message)
        self.holder = holder


def host_name() -> str:
    try:
        return socket.gethostname()
    except OSError:
        return "unknown"


def writer_identity() -> dict:
    """What a run row and the lock file record about the writing process."""
    from lvlmva_desktop.core.store.project import current_user

    return {"user": current_user(), "pid": os.getpid(), "host": host_name(), "process": PROCESS_TOKEN}


@dataclass
class _Held:
    file: IO[bytes]
    count: int
    locked: bool  # False where the file system offers no locks (then only this process's word counts)
    folder_fd: int | None = None  # POSIX: the project folder itself, locked too (see _lock_folder)


_registry: dict[str, _Held] = {}
_mutex = threading.Lock()


def _after_fork_in_child() -> None:
    """A forked child is another process: it must not inherit the parent's writer lock (the flock is
    shared with the parent, and unlocking it here would free the parent's), nor its run identity."""
    global PROCESS_TOKEN, _mutex
    _mutex = threading.Lock()
    for held in _registry.values():
        try:
            held.file.close()  # the parent keeps its own descriptor, and with it the lock
            if held.folder_fd is not None:
                os.close(held.folder_fd)
        except OSError:
            pass
    _registry.clear()
    PROCESS_TOKEN = uuid.uuid4().hex


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class WriterLock:
    """This Project's share of the process's lock; ``first`` is True for the share that took it."""

    def __init__(self, key: str, first: bool, locked: bool) -> None:
        self.key = key
        self.first = first
        self.locked = locked
        self._released = False

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        with _mutex:
            held = _registry.get(self.key)
            if held is None:
                return
            held.count -= 1
            if held.count > 0:
                return
            del _registry[self.key]
            try:
                held.file.seek(0)
                held.file.truncate()  # the description goes; the lock itself is what counts
                held.file.flush()
                if held.locked:
                    _unlock(held.file)
            except OSError as e:  # the folder vanished or went read-only: closing frees the lock anyway
                log.warning("releasing the project lock: %s", e)
            finally:
                held.file.close()
                if held.folder_fd is not None:
                    os.close(held.folder_fd)  # closing frees the folder's lock


def acquire(root: Path) -> WriterLock:
    """Take (or share, within this process) the project's writer lock; ProjectLocked if another has it."""
    key = os.path.realpath(root)
    with _mutex:
        held = _registry.get(key)
        if held is not None:
            held.count += 1
            return WriterLock(key, first=False, locked=held.locked)
        path = Path(key) / LOCK_FILE
        try:
            f = open(path, "a+b")  # noqa: SIM115 - held open for the lock's lifetime; never truncate before locking
        except OSError as e:
            raise ProjectError(
                f"The project folder {root} cannot be written ({e.strerror or e}); open it read-only."
            ) from e
        locked = True
        folder_fd = None
        try:
            folder_fd = _lock_folder(key)
            _lock(f)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK, getattr(errno, "EDEADLOCK", -1)):
                holder = _read_holder(f)
                f.close()
                if folder_fd is not None:
                    os.close(folder_fd)
                if not holder:  # the folder is held, but its lock file was removed and made anew
                    holder = {"user": "unknown user (the project's lock file was removed)"}
                raise ProjectLocked(_refusal(holder), holder) from None
            # e.g. a network share without locks: go on, but nothing keeps a second writer out
            log.warning(
                "the project folder %s offers no file locks (%s); another writer is not kept out", root, e
            )
            locked = False
        info = {**writer_identity(), "since": time.time()}
        try:
            f.seek(0)
            f.truncate()
            f.write(json.dumps(info).encode("utf-8"))
            f.flush()
        except OSError as e:
            log.warning("could not describe the holder in %s: %s", path, e)
        _registry[key] = _Held(f, 1, locked, folder_fd)
        return WriterLock(key, first=True, locked=locked)


def held_here(root: Path) -> bool:
    """Whether this process holds the writer lock of the project at ``root``."""
    with _mutex:
        return os.path.realpath(root) in _registry


def _read_holder(f: IO[bytes]) -> dict:
    try:
        f.seek(0)
        return json.loads(f.read(4096).decode("utf-8") or "{}")
    except (OSError, ValueError):
        return {}


def _refusal(holder: dict) -> str:
    user = holder.get("user", "unknown user")
    pid = holder.get("pid", "?")
    since = holder.get("since")
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(since)) if isinstance(since, (int, float)) else "?"
    host = holder.get("host")
    where = f", on {host}" if host and host != host_name() else ""
    return (
        f"This project is open in another LVLM-VA window or command (user {user}, pid {pid}{where}, "
        f"since {when}). Close it there, or open it read-only."
    )


if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _lock_folder(folder: str) -> int | None:
        """Windows: an open lock file cannot be deleted, so the file's lock is enough."""
        return None

    def _lock(f: IO[bytes]) -> None:
        f.seek(_WIN_LOCK_OFFSET)
        msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)

    def _unlock(f: IO[bytes]) -> None:
        f.seek(_WIN_LOCK_OFFSET)
        msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _lock_folder(folder: str) -> int | None:
        """POSIX: an exclusive lock on the project folder itself, which, unlike ``project.lock``, nobody can
        remove while the project is in it (with the lock file deleted, a second process would otherwise
        lock a new file of the same name). None where the folder cannot be locked (then the file's lock
        is all there is). Raises OSError (EWOULDBLOCK) when another process holds it."""
        try:
            fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError as e:
            log.warning("the project folder %s cannot be opened for locking: %s", folder, e)
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            log.warning("the project folder %s cannot be locked: %s", folder, e)
            return None
        return fd

    def _lock(f: IO[bytes]) -> None:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(f: IO[bytes]) -> None:
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
