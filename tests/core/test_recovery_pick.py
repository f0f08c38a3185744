"""Resuming picks each interrupted run once: a run already taken over by a later one is refused."""

from __future__ import annotations

import json
import time

import pytest

from lvlmva_desktop.core.store import recovery
from lvlmva_desktop.core.store.project import Project, ProjectError


def test_a_run_resumed_once_is_not_resumed_again(tmp_path):
    with Project.create(tmp_path / "p", "p", ["a", "b"], (8, 8), 1) as p:
        p.db.execute(
            "INSERT INTO runs (id, kind, status, started, settings) VALUES (100, 'critique', ?, ?, ?)",
            (recovery.INTERRUPTED, time.time(), json.dumps({"explanation_id": 1})),
        )
        assert recovery.pick(p, 100)["id"] == 100  # not taken over yet
        p.db.execute(
            "INSERT INTO runs (id, kind, status, started, settings) VALUES (101, 'critique', 'finished', ?, ?)",
            (time.time(), json.dumps({"explanation_id": 1, "resumes": 100})),
        )
        with pytest.raises(ProjectError, match="already resumed by a later run"):
            recovery.pick(p, 100)
        assert recovery.resumable_runs(p) == []
