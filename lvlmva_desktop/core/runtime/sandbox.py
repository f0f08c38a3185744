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
import stat
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
    """One private folder per user in the temp folder (``lvlmva-desktop-cache-<user id>``).

    The name is predictable, so another user could create it first: it is used only when it is a real
    folder (not a link) owned by this user with mode 0700; otherwise a fresh private folder is made
    (``tempfile.mkdtemp``, which is created atomically with mode 0700).
    """
    uid = os.getuid() if hasattr(os, "getuid") else None
    root = Path(tempfile.gettempdir()) / f"lvlmva-desktop-cache-{uid if uid is not None else 'user'}"
    try:
        root.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except OSError:
        return Path(tempfile.mkdtemp(prefix="lvlmva-desktop-cache-"))
    try:
        st = os.lstat(root)
    except OSError:
        return Path(tempfile.mkdtemp(prefix="lvlmva-desktop-cache-"))
    private = stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
    if uid is not None:
        private = private and st.st_uid == uid
    return root if private else Path(tempfile.mkdtemp(prefix="lvlmva-desktop-cache-"))


def redirect_caches(root: Path | None = None) -> dict[str, str]:
    """Set every cache variable to a folder under ``root`` (default: ``cache_root()``); return what was set.

    The folders are created with mode 0700. Every variable is replaced, whatever the user's environment
    says, because a site's policy is about where the program writes.
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
