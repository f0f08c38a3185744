"""Builders the core tests share: a small demo project, the method's first steps on it, and a fresh copy of a
prepared project for each test (so a module prepares its project once and every test may change its own).

A module that needs other data keeps its own fixture (tests/core/test_pipeline.py imports an isic-like
manifest into a new project for every test)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from lvlmva_desktop.core.data.demo import create_demo_project
from lvlmva_desktop.core.method.explain import ExplainSettings
from lvlmva_desktop.core.method.pipeline import explain_alignment_set, sample_alignment_set, train_original
from lvlmva_desktop.core.method.sampling import SamplingSettings
from lvlmva_desktop.core.method.segment import SegmentSettings
from lvlmva_desktop.core.method.train import TrainSettings
from lvlmva_desktop.core.store.project import Project

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def new_small_demo(tmp_path_factory):
    """Makes a small demo project (generated lesions with patches: 48 test images of 32 px, ``n_train``
    training images) in a new temporary folder named after ``name``; returns its root."""

    def make(name: str, n_train: int = 96) -> Path:
        return create_demo_project(
            tmp_path_factory.mktemp(name) / "demo", n_train=n_train, n_test=48, size=32
        )

    return make


@pytest.fixture(scope="module")
def explained_alignment_set():
    """Runs steps 1-4 on an open project: trains a small CNN, samples ``n`` images of low entropy, explains
    (by default DeepLIFT-SHAP with 4 references) and segments them; returns (model id, alignment set id,
    explanation id)."""

    def run(
        p: Project, train: TrainSettings, n: int, explain: ExplainSettings | None = None
    ) -> tuple[int, int, int]:
        mid = train_original(p, "small_cnn", train, CPU)
        sid = sample_alignment_set(p, mid, SamplingSettings(n=n), CPU)
        explain = explain if explain is not None else ExplainSettings(n_background=4)
        eid = explain_alignment_set(p, mid, sid, explain, SegmentSettings(), CPU)
        return mid, sid, eid

    return run


@pytest.fixture
def copy_of_project(tmp_path):
    """Copies a prepared project folder into this test's temporary folder as ``name``; returns the copy's
    root (a demo's images live inside its folder, so they travel with it)."""

    def copy(template: Path, name: str) -> Path:
        root = tmp_path / name
        shutil.copytree(template, root)
        return root

    return copy
