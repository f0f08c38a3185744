"""Offline by construction: the Hugging Face libraries are told, before they are imported, never to go online.

Models are read from local folders (``local_files_only=True`` everywhere, checked by the architecture test),
so nothing should try the network anyway; these switches make a forgotten call fail locally instead of
reaching out. They are FORCED, not defaulted: ``HF_HUB_OFFLINE=0`` in the user's environment is overridden,
because a regulated site must be able to rely on the tool staying offline whatever the shell says. The only
connection the tool may open is the one to an LVLM server the user configured (``lvlm/endpoint.py``).

Qt-free and import-light (stdlib only), so the package ``__init__`` can call it before anything else.
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)

#: Environment switches set to "1" at start-up (hub downloads, transformers, datasets, telemetry).
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}


def enforce_offline() -> list[str]:
    """Force the offline switches on; return the names whose value had to be changed (for the log).

    huggingface_hub reads ``HF_HUB_OFFLINE`` once, at import; when it is already imported (a host program
    imported it before us), its module constant is switched too, so transformers' ``is_offline_mode()``
    agrees with the environment.
    """
    changed = [name for name, value in OFFLINE_ENV.items() if os.environ.get(name) != value]
    overridden = [f"{n}={os.environ[n]!r}" for n in changed if n in os.environ]
    if overridden:
        log.info(
            "the environment asked for %s; overridden: this tool never goes online", ", ".join(overridden)
        )
    for name, value in OFFLINE_ENV.items():
        os.environ[name] = value
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None and getattr(constants, "HF_HUB_OFFLINE", True) is not True:
        constants.HF_HUB_OFFLINE = True
        changed.append("huggingface_hub.constants.HF_HUB_OFFLINE")
    if changed:
        log.debug("offline mode forced: %s", ", ".join(changed))
    return changed
