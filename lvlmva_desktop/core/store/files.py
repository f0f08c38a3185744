"""The project folder's files: its error type, safe writes of tensors and JSON, reading its images,
content hashes and the user who writes."""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import os
from pathlib import Path

from safetensors.torch import save_file

from lvlmva_desktop.core.runtime.errors import PlainError

MANIFEST = "project.json"
DATABASE = "project.sqlite"


class ProjectError(PlainError):
    """A project cannot be created or opened; the message says why in plain words."""

    kind = "project"


def write_tensors(tensors: dict, path: Path, root: Path, metadata: dict | None = None) -> None:
    """safetensors' save_file, with a failed write (a full disk, a folder that may not be written) told
    as one ProjectError naming the file, and the half-written file removed."""
    from safetensors import SafetensorError

    try:
        save_file(tensors, str(path), metadata=metadata)
    except (SafetensorError, OSError) as e:
        with contextlib.suppress(OSError):
            path.unlink()
        why = str(e)
        if isinstance(e, OSError) and e.strerror:
            why = e.strerror
        try:
            shown = path.relative_to(root).as_posix()
        except ValueError:
            shown = str(path)
        low = why.lower()
        full = any(
            w in low for w in ("space", "too large", "os error 28", "os error 27", "errno 28", "errno 27")
        )
        hint = "Free some disk space" if full else "Check that the project folder may be written"
        raise ProjectError(
            f"Could not write {shown} in the project folder {root} ({why}). {hint} and run the step again; "
            "nothing of the step was kept."
        ) from None


def read_project_image(path: Path, sample_id: int, reader):
    """``reader(path)`` (read_image or read_mask), with a file that cannot be read told as one
    ProjectError naming the image and the file (and what to do when the project or its images moved)."""
    from lvlmva_desktop.core.data.images import ImageLoadError

    try:
        return reader(path)
    except ImageLoadError as e:
        hint = ""
        if e.reason == "missing":
            hint = (
                " The project refers to its images where they were imported from; if the images or the "
                "project folder were moved, move them back, or import the images again."
            )
        raise ProjectError(f"Image {sample_id} cannot be read: {path}: {e.detail}.{hint}") from None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def current_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some sandboxes
        return "unknown"


def atomic_write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    os.replace(tmp, path)
