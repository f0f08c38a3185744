"""Benchmark data sets with a known shortcut, for testing LVLM-aided alignment end to end.

Each set has a class-correlated artefact in training and a decorrelated one at test time, ground-truth
artefact masks and group labels (class x artefact attribute), so that worst-group accuracy shows whether
a classifier learned the shortcut and whether alignment removed it. Every generator writes the project's
CSV manifest layout (``images/``, ``masks/``, ``manifest.csv``, ``dataset.json``) and is deterministic in
its seed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lvlmva_desktop.core.data.benchsets import decoymnist, elpv_tags, isic_like, surface
from lvlmva_desktop.core.data.benchsets._common import MANIFEST_COLUMNS
from lvlmva_desktop.core.data.benchsets.decoymnist import generate_decoymnist
from lvlmva_desktop.core.data.benchsets.elpv_tags import generate_elpv_tags
from lvlmva_desktop.core.data.benchsets.isic_like import generate_isic_like
from lvlmva_desktop.core.data.benchsets.surface import generate_surface

__all__ = [
    "DESCRIPTIONS",
    "GENERATORS",
    "MANIFEST_COLUMNS",
    "default_class_descriptions",
    "generate_decoymnist",
    "generate_elpv_tags",
    "generate_isic_like",
    "generate_surface",
]

# Each takes (out_dir, seed=0, state=None, **params) and returns the path of the written manifest.csv.
GENERATORS: dict[str, Callable[..., Path]] = {
    decoymnist.NAME: generate_decoymnist,
    isic_like.NAME: generate_isic_like,
    elpv_tags.NAME: generate_elpv_tags,
    surface.NAME: generate_surface,
}

DESCRIPTIONS: dict[str, str] = {
    decoymnist.NAME: decoymnist.DESCRIPTION,
    isic_like.NAME: isic_like.DESCRIPTION,
    elpv_tags.NAME: elpv_tags.DESCRIPTION,
    surface.NAME: surface.DESCRIPTION,
}

_CLASS_DESCRIPTIONS: dict[str, dict[str, str]] = {
    decoymnist.NAME: decoymnist.CLASS_DESCRIPTIONS,
    isic_like.NAME: isic_like.CLASS_DESCRIPTIONS,
    elpv_tags.NAME: elpv_tags.CLASS_DESCRIPTIONS,
    surface.NAME: surface.CLASS_DESCRIPTIONS,
}


def default_class_descriptions(name: str) -> dict[str, str]:
    """Per class (in class order), the plain-words criterion an expert would give for that class.

    These seed the expert descriptions the LVLM critic compares explanations against, so a benchmark
    run needs no typing; each also names the set's artefact as irrelevant.
    """
    try:
        return dict(_CLASS_DESCRIPTIONS[name])
    except KeyError:
        raise KeyError(f"unknown benchmark set {name!r}; known: {', '.join(GENERATORS)}") from None
