"""GUI test fixtures: isolated user settings, a small demo project, and one with an explanation.

Projects are built once per session and copied per test (copying a 400-image project takes ~0.1 s).
Screenshots go to tests/artifacts/screenshots (or $LVLMVA_ARTIFACTS) to be looked at.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

SMALL_DEMO = {"n_train": 240, "n_test": 120, "size": 32}


@pytest.fixture(scope="session", autouse=True)
def _isolated_qsettings(tmp_path_factory):
    """QSettings of the tests go to a temporary folder, never to the developer's own settings."""
    from PySide6.QtCore import QCoreApplication, QSettings

    folder = tmp_path_factory.mktemp("qsettings")
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(folder))
    QCoreApplication.setOrganizationName("lvlmva-tests")
    QCoreApplication.setApplicationName("lvlmva-desktop-tests")
    yield folder


@pytest.fixture(autouse=True)
def _collect_on_gui_thread(qapp):
    """As in the program (app.py): cyclic garbage is collected on the GUI thread only, never in a job's
    thread, where finalising an earlier test's widgets crashed the suite (a segmentation fault in CI).
    At the end of the test, the test's garbage is collected here and automatic collection comes back."""
    from lvlmva_desktop.gui import gc_guard

    gc_guard.install(qapp)
    yield
    gc_guard.uninstall()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    d = (
        Path(os.environ.get("LVLMVA_ARTIFACTS", Path(__file__).resolve().parents[1] / "artifacts"))
        / "screenshots"
    )
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory) -> Path:
    """A small demo project (generated ISIC-like lesions, 240 train / 120 test, 32x32): data only."""
    from lvlmva_desktop.core.data.demo import create_demo_project

    return create_demo_project(tmp_path_factory.mktemp("demo") / "demo", **SMALL_DEMO)


@pytest.fixture(scope="session")
def explained_template(tmp_path_factory, demo_template) -> Path:
    """The small demo after steps 1-6: a trained model, a 16-image alignment set, its explanation and a
    critique by the simulated critic (ground truth with 13% verdict errors)."""
    import torch

    from lvlmva_desktop.core.method.critic import GroundTruthCritic
    from lvlmva_desktop.core.method.explain import ExplainSettings
    from lvlmva_desktop.core.method.pipeline import (
        explain_alignment_set,
        run_critique,
        sample_alignment_set,
        train_original,
    )
    from lvlmva_desktop.core.method.sampling import SamplingSettings
    from lvlmva_desktop.core.method.segment import SegmentSettings
    from lvlmva_desktop.core.method.train import TrainSettings
    from lvlmva_desktop.core.store.project import Project

    root = tmp_path_factory.mktemp("explained") / "demo"
    shutil.copytree(demo_template, root)
    cpu = torch.device("cpu")
    with Project.open(root) as p:
        mid = train_original(p, "small_cnn", TrainSettings(epochs=2), cpu)
        sid = sample_alignment_set(p, mid, SamplingSettings(n=16), cpu)
        eid = explain_alignment_set(p, mid, sid, ExplainSettings(n_background=4), SegmentSettings(), cpu)
        run_critique(p, eid, GroundTruthCritic(error_rate=0.13, seed=0))
    return root


@pytest.fixture
def demo_project(tmp_path, demo_template) -> Path:
    root = tmp_path / "demo"
    shutil.copytree(demo_template, root)
    return root


@pytest.fixture
def explained_project(tmp_path, explained_template) -> Path:
    root = tmp_path / "explained"
    shutil.copytree(explained_template, root)
    return root


@pytest.fixture
def window(qtbot):
    """The main window at 1366x768 with fresh user settings, shut down (jobs stopped) after the test."""
    from PySide6.QtCore import QSettings

    from lvlmva_desktop.gui.main_window import MainWindow

    QSettings().clear()
    win = MainWindow()
    qtbot.addWidget(win)
    win.resize(1366, 768)
    win.show()
    qtbot.waitExposed(win)
    yield win
    win.shutdown()
