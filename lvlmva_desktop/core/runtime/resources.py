"""The program's resources folder (prompts, report template, fonts, built-in benchmark figures)."""

from __future__ import annotations

import sys
from pathlib import Path


class ResourcesMissing(FileNotFoundError):
    """The resources folder is not where the installation put it."""


def resources_dir() -> Path:
    """The resources/ folder: next to the package in a checkout, or inside a PyInstaller bundle."""
    bundled = getattr(sys, "_MEIPASS", None)
    candidates = [Path(bundled) / "resources"] if bundled else []
    candidates.append(Path(__file__).resolve().parents[3] / "resources")
    for c in candidates:
        if (c / "prompts").is_dir():
            return c
    raise ResourcesMissing(
        "The program's resources folder (with prompts/) is missing; reinstall the program."
    )
