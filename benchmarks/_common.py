"""Shared set-up for the benchmark scripts: import path, quiet warnings, a project per data set."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

warnings.filterwarnings("ignore", message="Setting forward, backward hooks")


def project_for(name: str, seed: int, out: Path, params: dict, size: int, channels: int):
    """Generate the data set (once per name/seed/params) and open its project."""
    import json

    from lvlmva_desktop.core.data.benchsets import GENERATORS, default_class_descriptions
    from lvlmva_desktop.core.data.importing import import_csv_manifest
    from lvlmva_desktop.core.store.project import Project

    tag = "-".join(f"{k}{v}" for k, v in sorted(params.items()))
    folder = out / f"{name}-seed{seed}-{tag}"
    if (folder / "proj" / "project.json").exists():
        return Project.open(folder / "proj")
    manifest = GENERATORS[name](folder / "data", seed=seed, **params)
    report = import_csv_manifest(manifest)
    p = Project.create(folder / "proj", f"{name} seed {seed}", report.classes, (size, size), channels)
    p.add_samples(report)
    p.set_class_descriptions(default_class_descriptions(name))
    (folder / "params.json").write_text(json.dumps(params))
    return p
