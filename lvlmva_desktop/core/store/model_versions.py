"""The project's model versions: immutable safetensors files whose sha256 the table and the audit log
record."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import time

import torch
from safetensors.torch import load_file

from lvlmva_desktop.core.method.models import ModelSpec, build_model, spec_metadata
from lvlmva_desktop.core.store.files import (
    ProjectError,
    sha256_file,
    write_tensors,
)


class ModelVersionStore:
    """Part of Project (core/store/project.py): the models table and the model files."""

    # -- model versions -------------------------------------------------------------------------------
    def save_model(
        self,
        module: torch.nn.Module,
        spec: ModelSpec,
        name: str,
        kind: str,
        parent_id: int | None,
        run_id: int | None,
        info: dict | None = None,
    ) -> int:
        """Store a new immutable model version (safetensors, read-only file, sha256 in the database)."""
        info = info or {}
        tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO models (name, kind, parent_id, run_id, path, sha256, spec, info, created) "
                "VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    name,
                    kind,
                    parent_id,
                    run_id,
                    "",
                    "",
                    json.dumps(spec.to_dict()),
                    json.dumps(info),
                    time.time(),
                ),
            )
            model_id = int(cur.lastrowid)
            path = self.root / "models" / f"model-{model_id:04d}-{kind}.safetensors"
            tmp = path.with_suffix(".tmp")
            write_tensors(tensors, tmp, self.root, spec_metadata(spec, {"name": name, "kind": kind}))
            os.replace(tmp, path)
            os.chmod(path, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
            digest = sha256_file(path)
            db.execute("UPDATE models SET path=?, sha256=? WHERE id=?", (self.rel(path), digest, model_id))
            params = {
                "model_id": model_id,
                "name": name,
                "kind": kind,
                "parent_id": parent_id,
                "run_id": run_id,
            }
            self.audit("model_version", params, {"model": digest})
        return model_id

    def model_row(self, model_id: int) -> sqlite3.Row:
        """The row of model version ``model_id``; a ProjectError when there is none."""
        row = self.db.execute("SELECT * FROM models WHERE id=?", (model_id,)).fetchone()
        if row is None:
            raise ProjectError(f"No model version {model_id} in this project.")
        return row

    def models(self, kind: str | None = None, *, newest_first: bool = False) -> list[sqlite3.Row]:
        """Every model version (of ``kind``: 'erm', 'imported', 'rrr'), oldest first unless
        ``newest_first``."""
        q = "SELECT * FROM models" + (" WHERE kind=?" if kind is not None else "")
        q += " ORDER BY id DESC" if newest_first else " ORDER BY id"
        return self.db.execute(q, (kind,) if kind is not None else ()).fetchall()

    def latest_original_model(self) -> int | None:
        """The audited model: the newest trained ('erm') or imported version, never an aligned one; None
        when there is none."""
        row = self.db.execute(
            "SELECT id FROM models WHERE kind IN ('erm','imported') ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return int(row[0]) if row is not None else None

    def first_unaligned_model(self) -> int | None:
        """The oldest model version that is not an aligned ('rrr') one; None when there is none."""
        row = self.db.execute("SELECT id FROM models WHERE kind!='rrr' ORDER BY id LIMIT 1").fetchone()
        return int(row[0]) if row is not None else None

    def original_of(self, model_id: int) -> int:
        """The model a version was derived from, followed back to the first one (itself if it has no
        parent): the ERM or imported model that an aligned version is compared with."""
        seen = set()
        current = int(model_id)
        while current not in seen:
            seen.add(current)
            parent = self.model_row(current)["parent_id"]
            if parent is None:
                return current
            current = int(parent)
        return current

    def latest_model(self, kind: str | None = None) -> int | None:
        """The newest model version (of ``kind``); None when there is none."""
        q = "SELECT id FROM models" + (" WHERE kind=?" if kind else "") + " ORDER BY id DESC LIMIT 1"
        row = self.db.execute(q, (kind,) if kind else ()).fetchone()
        return int(row["id"]) if row else None

    def load_model(self, model_id: int) -> tuple[torch.nn.Module, ModelSpec]:
        """Rebuild a model version, refusing a file whose sha256 differs from the one recorded in the table
        and in the audit log when the version was made (a file replaced together with its table row)."""
        row = self.model_row(model_id)
        path = self.abs(row["path"])
        if not path.is_file():
            raise ProjectError(f"The file of model version {model_id} is missing: {path}")
        digest = sha256_file(path)
        if digest != row["sha256"]:
            raise ProjectError(
                f"Model version {model_id} was modified on disk (sha256 mismatch); refusing to use it."
            )
        logged = self.logged_hash("model_version", "model_id", int(model_id), "model")
        if logged is not None and logged != digest:
            raise ProjectError(
                f"Model version {model_id} is not the one recorded in the audit log when it was made (its file "
                "and its sha256 in the models table were both changed); refusing to use it. `lvlmva audit "
                "PROJ --verify` lists what changed."
            )
        spec = ModelSpec.from_dict(json.loads(row["spec"]))
        module = build_model(spec)
        module.load_state_dict(load_file(str(path)))
        return module.eval(), spec
