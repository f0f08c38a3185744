"""Shared fixtures for the LVLM tests: tiny random-weight model folders, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.tiny_lvlm import FAMILIES, make_tiny_lvlm


class TinyLVLMDirs:
    """One tiny model folder per family, built on first use and kept for the session (read-only: copy a
    folder before changing it)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._dirs: dict[str, Path] = {}

    def __getitem__(self, family: str) -> Path:
        if family not in self._dirs:
            self._dirs[family] = make_tiny_lvlm(family, self.root / family)
        return self._dirs[family]

    def __iter__(self):
        return iter(FAMILIES)


@pytest.fixture(scope="session")
def tiny_lvlm_dirs(tmp_path_factory) -> TinyLVLMDirs:
    return TinyLVLMDirs(tmp_path_factory.mktemp("tiny_lvlm"))
