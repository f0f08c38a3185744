"""Where the packaged program may write: the project folder, the user's settings folder, the temp folder.

Some libraries write caches on their own: fontconfig and Mesa under ``$XDG_CACHE_HOME`` (``~/.cache``),
matplotlib (imported by captum) under ``$MPLCONFIGDIR`` (``~/.config/matplotlib``), the CUDA driver's
kernel cache under ``~/.nv``, torch's compiler under ``/tmp`` and ``~/.triton``. ``redirect_caches`` points
them all into one folder of the temp folder, before those libraries are imported. The packaged build calls
it first thing (packaging/lvlmva_desktop_main.py); an installation from pip leaves the user's environment
as it is. Stdlib only: it runs before torch or Qt is imported.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

#: environment variable -> sub-folder of the cache folder
CACHE_VARIABLES = {
    "XDG_CACHE_HOME": "xdg-cache",
    "MPLCONFIGDIR": "matplotlib",
    "CUDA_CACHE_PATH": "cuda",
    "TRITON_CACHE_DIR": "triton",
    "TORCHINDUCTOR_CACHE_DIR": "torchinductor",
    "HF_HOME": "huggingface",
}


def cache_root() -> Path:
    """One folder per user in the temp folder (``lvlmva-desktop-cache-<user id>``)."""
    uid = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    return Path(tempfile.gettempdir()) / f"lvlmva-desktop-cache-{uid}"


def redirect_caches(root: Path | None = None) -> dict[str, str]:
    """Set every cache variable to a folder under ``root`` (default: ``cache_root()``); return what was set.

    The folders are created with mode 0700. A variable the user set to a folder inside ``root`` already is
    kept; every other value is replaced, because a site's policy is about where the program writes.
    """
    root = Path(root) if root is not None else cache_root()
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    done = {}
    for name, sub in CACHE_VARIABLES.items():
        folder = root / sub
        folder.mkdir(mode=0o700, exist_ok=True)
        os.environ[name] = str(folder)
        done[name] = str(folder)
    return done
