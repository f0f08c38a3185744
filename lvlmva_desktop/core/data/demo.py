"""The built-in demo project: generated ISIC-like skin lesions whose benign training images carry
coloured patches (the shortcut), with the class descriptions an expert would write.

The demo data are generated (no download, no licensed images), deterministic in their seed.
"""

from __future__ import annotations

import os
from pathlib import Path

from lvlmva_desktop.core.runtime.jobs import TaskState, ensure_state

DEMO_DATASET = "isic-like"
DEMO_NAME = "Demo: skin lesions with patches"
DEMO_PARAMS = {"n_train": 1200, "n_test": 600, "size": 48}


def default_demo_folder() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "lvlmva-desktop" / "demo-project"


def create_demo_project(
    folder: str | Path, state: TaskState | None = None, seed: int = 0, **params: int
) -> Path:
    """Generate the demo data into ``folder/data`` and make ``folder`` a project; return the folder.

    ``params`` override DEMO_PARAMS (n_train, n_test, size): the tests build a smaller demo.
    """
    from lvlmva_desktop.core.data.benchsets import GENERATORS, default_class_descriptions
    from lvlmva_desktop.core.data.importing import import_csv_manifest
    from lvlmva_desktop.core.store.project import Project

    state = ensure_state(state)
    folder = Path(folder)
    p = {**DEMO_PARAMS, **params}
    manifest = GENERATORS[DEMO_DATASET](folder / "data", seed=seed, state=state.child(0.0, 0.7), **p)
    state.progress(0.7, None, "importing the demo images")
    report = import_csv_manifest(manifest)
    state.check()
    project = Project.create(folder, DEMO_NAME, report.classes, (p["size"], p["size"]), 3)
    with project:
        project.add_samples(report)
        project.set_class_descriptions(default_class_descriptions(DEMO_DATASET))
    state.progress(1.0, None, "demo project ready")
    return folder
