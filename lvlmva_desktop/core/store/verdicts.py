"""The project's alignment sets, explanations, critiques, verdicts and metrics."""

from __future__ import annotations

import json
import os
import sqlite3
import time

import torch
from safetensors.torch import load_file

from lvlmva_desktop.core.store import audit as audit_log
from lvlmva_desktop.core.store.files import (
    ProjectError,
    current_user,
    sha256_file,
    write_tensors,
)


class VerdictStore:
    """Part of Project (core/store/project.py): what the method's steps write after a model exists."""

    # -- alignment sets, explanations -----------------------------------------------------------------
    def save_alignment_set(
        self, run_id: int, model_id: int, settings: dict, sample_ids: list[int], entropies: list[float]
    ) -> int:
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO alignment_sets (run_id, model_id, settings, created) VALUES (?,?,?,?)",
                (run_id, model_id, json.dumps(settings), time.time()),
            )
            set_id = int(cur.lastrowid)
            db.executemany(
                "INSERT INTO alignment_members (set_id, rank, sample_id, entropy) VALUES (?,?,?,?)",
                [(set_id, i, s, e) for i, (s, e) in enumerate(zip(sample_ids, entropies))],
            )
            params = {"set_id": set_id, "run_id": run_id, "model_id": model_id, "n": len(sample_ids)}
            self.audit("alignment_set", params, {"members": audit_log.json_hash(list(sample_ids))})
        return set_id

    def alignment_members(self, set_id: int) -> list[sqlite3.Row]:
        """The members (rank, sample_id, entropy) of alignment set ``set_id`` in rank order; a ProjectError
        when there is no such set."""
        rows = self.db.execute(
            "SELECT * FROM alignment_members WHERE set_id=? ORDER BY rank", (set_id,)
        ).fetchall()
        if not rows:
            raise ProjectError(f"No alignment set {set_id} in this project.")
        return rows

    def alignment_set_model(self, set_id: int) -> int:
        """The model whose predictions chose alignment set ``set_id``; a ProjectError when there is no
        such set."""
        row = self.db.execute("SELECT model_id FROM alignment_sets WHERE id=?", (set_id,)).fetchone()
        if row is None:
            raise ProjectError(f"No alignment set {set_id} in this project.")
        return int(row[0])

    def alignment_sample_ids(self, set_id: int) -> list[int]:
        """The images of alignment set ``set_id`` in rank order (empty when there is no such set)."""
        rows = self.db.execute(
            "SELECT sample_id FROM alignment_members WHERE set_id=? ORDER BY rank", (set_id,)
        )
        return [int(r[0]) for r in rows]

    def alignment_entropies(self, set_id: int) -> dict[int, float | None]:
        """Each image of alignment set ``set_id`` with its predictive entropy when chosen (empty when
        there is no such set)."""
        rows = self.db.execute("SELECT sample_id, entropy FROM alignment_members WHERE set_id=?", (set_id,))
        return {int(r["sample_id"]): r["entropy"] for r in rows}

    def explains_sample(self, expl_id: int, sample_id: int) -> bool:
        """Whether explanation ``expl_id`` covers the image (it explains every member of its alignment set);
        False for an unknown explanation or image."""
        row = self.db.execute(
            "SELECT 1 FROM alignment_members m JOIN explanations e ON m.set_id = e.set_id "
            "WHERE e.id=? AND m.sample_id=? LIMIT 1",
            (expl_id, sample_id),
        ).fetchone()
        return row is not None

    def save_explanation(
        self, run_id: int, model_id: int, set_id: int, settings: dict, tensors: dict[str, torch.Tensor]
    ) -> int:
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO explanations (run_id, model_id, set_id, settings, path, sha256, created) "
                "VALUES (?,?,?,?,?,?,?)",
                (run_id, model_id, set_id, json.dumps(settings), "", "", time.time()),
            )
            expl_id = int(cur.lastrowid)
            path = self.root / "artifacts" / f"explanation-{expl_id:04d}.safetensors"
            tmp = path.with_suffix(".tmp")
            write_tensors({k: v.contiguous() for k, v in tensors.items()}, tmp, self.root)
            os.replace(tmp, path)
            digest = sha256_file(path)
            db.execute(
                "UPDATE explanations SET path=?, sha256=? WHERE id=?", (self.rel(path), digest, expl_id)
            )
            params = {"explanation_id": expl_id, "run_id": run_id, "model_id": model_id, "set_id": set_id}
            self.audit("explanation", params, {"explanation": digest})
        return expl_id

    def explanation_row(self, expl_id: int) -> sqlite3.Row:
        """The explanation's row (settings, the attribution method used) without reading its tensors."""
        row = self.db.execute("SELECT * FROM explanations WHERE id=?", (expl_id,)).fetchone()
        if row is None:
            raise ProjectError(f"No explanation {expl_id} in this project.")
        return row

    def explanation_model(self, expl_id: int) -> int:
        """The model version explanation ``expl_id`` explains; a ProjectError when there is none."""
        return int(self.explanation_row(expl_id)["model_id"])

    def explanation(self, expl_id: int) -> tuple[sqlite3.Row, dict[str, torch.Tensor]]:
        row = self.db.execute("SELECT * FROM explanations WHERE id=?", (expl_id,)).fetchone()
        if row is None:
            raise ProjectError(f"No explanation {expl_id} in this project.")
        path = self.abs(row["path"])
        if not path.is_file():
            raise ProjectError(f"The file of explanation {expl_id} is missing: {path}")
        digest = sha256_file(path)
        logged = self.logged_hash("explanation", "explanation_id", int(expl_id), "explanation")
        if digest != row["sha256"] or (logged is not None and logged != digest):
            raise ProjectError(
                f"The file of explanation {expl_id} ({row['path']}) is not the one written when it was made "
                "(its sha256 differs from the one recorded); refusing to use it. `lvlmva audit PROJ --verify` "
                "lists what changed."
            )
        return row, load_file(str(path))

    # -- critiques and verdicts -------------------------------------------------------------------------
    def save_critique(self, run_id: int | None, expl_id: int, critique: object) -> int:
        """Store a critic's text and its verdicts (source 'critic'); an expert's later word overrides them."""
        from lvlmva_desktop.core.method.critic import Critique

        assert isinstance(critique, Critique)
        now = time.time()
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO critiques (run_id, explanation_id, sample_id, critic, text, raw, created) "
                "VALUES (?,?,?,?,?,?,?)",
                (
                    run_id,
                    expl_id,
                    critique.sample_id,
                    critique.critic,
                    critique.text,
                    json.dumps(critique.raw),
                    now,
                ),
            )
            cid = int(cur.lastrowid)
            db.executemany(
                "INSERT INTO verdicts (explanation_id, sample_id, segment, verdict, source, author, critique_id, "
                "created, confidence) VALUES (?,?,?,?,?,?,?,?,?)",
                [
                    (
                        expl_id,
                        critique.sample_id,
                        v.segment,
                        v.verdict,
                        "critic",
                        critique.critic,
                        cid,
                        now,
                        _confidence(getattr(v, "confidence", None)),
                    )
                    for v in critique.verdicts
                ],
            )
            # each image's critique is chained as it is stored, so a run that stops half-way (cancelled,
            # failed, killed) leaves no unhashed verdicts behind; the run's own entry hashes them together.
            # The verdicts' confidences only order the expert's review (core/views/review.py), never a mask: the
            # entry hashes what it always hashed, so logs written before they existed still verify.
            self.audit(
                "critique_image",
                {
                    "run": run_id,
                    "explanation": expl_id,
                    "sample": critique.sample_id,
                    "critic": critique.critic,
                },
                {
                    "text": audit_log.text_hash(critique.text),
                    "verdicts": audit_log.json_hash([[v.segment, v.verdict] for v in critique.verdicts]),
                },
            )
        return cid

    def set_expert_verdict(self, expl_id: int, sample_id: int, segment: int, verdict: str) -> None:
        from lvlmva_desktop.core.method.critic import VERDICTS

        if verdict not in VERDICTS:
            raise ProjectError(f"Unknown verdict '{verdict}'; use one of {', '.join(VERDICTS)}.")
        _, t = self.explanation(expl_id)
        if "sample_ids" in t and sample_id not in t["sample_ids"].tolist():
            raise ProjectError(f"Image {sample_id} is not in the alignment set of explanation {expl_id}.")
        if "evidence" in t and not 0 <= segment < t["evidence"].shape[1]:
            raise ProjectError(
                f"Segment {segment + 1} does not exist; segments are numbered 1 to {t['evidence'].shape[1]}."
            )
        with self.transaction() as db:
            old = self._effective_verdict(expl_id, sample_id, segment)
            db.execute(
                "INSERT INTO verdicts (explanation_id, sample_id, segment, verdict, source, author, created) "
                "VALUES (?,?,?,?,?,?,?)",
                (expl_id, sample_id, segment, verdict, "expert", current_user(), time.time()),
            )
            self.audit("verdict_set", _verdict_params(expl_id, sample_id, segment, old, verdict, "expert"))

    def clear_expert_verdict(self, expl_id: int, sample_id: int, segment: int) -> int:
        """Take back the expert's word on one segment, so the critic's verdict (if any) applies again.

        Removes the expert's rows for that segment (the critic's rows are never touched); returns how many.
        """
        with self.transaction() as db:
            old = self._effective_verdict(expl_id, sample_id, segment)
            cur = db.execute(
                "DELETE FROM verdicts WHERE explanation_id=? AND sample_id=? AND segment=? AND source='expert'",
                (expl_id, sample_id, segment),
            )
            if cur.rowcount:
                now = self._effective_verdict(expl_id, sample_id, segment)
                params = _verdict_params(
                    expl_id, sample_id, segment, old, now and now["verdict"], now and now["source"]
                )
                self.audit("verdict_cleared", params)
        return int(cur.rowcount)

    def _effective_verdict(self, expl_id: int, sample_id: int, segment: int) -> sqlite3.Row | None:
        """One segment's effective verdict (as effective_verdicts), for the audit log's old/new."""
        return self.db.execute(
            "SELECT verdict, source FROM verdicts WHERE explanation_id=? AND sample_id=? AND segment=? "
            "ORDER BY source='expert' DESC, id DESC LIMIT 1",
            (expl_id, sample_id, segment),
        ).fetchone()

    def effective_verdicts(self, expl_id: int) -> dict[int, dict[int, dict]]:
        """Per sample and segment: the latest expert verdict if any, else the latest critic verdict; each
        with its source and author, and "confidence" where the critic gave one (its probability of the
        verdict; the key is left out where there is none, so read it with ``.get("confidence")``: the
        simulated critic, the expert's verdicts, a project opened read-only from before confidences)."""
        out: dict[int, dict[int, dict]] = {}
        rows = self.db.execute(
            "SELECT * FROM verdicts WHERE explanation_id=? ORDER BY id", (expl_id,)
        ).fetchall()
        has_conf = bool(rows) and "confidence" in rows[0].keys()
        for r in rows:
            cur = out.setdefault(r["sample_id"], {}).get(r["segment"])
            if cur is not None and cur["source"] == "expert" and r["source"] != "expert":
                continue
            d = {"verdict": r["verdict"], "source": r["source"], "author": r["author"]}
            if has_conf and r["confidence"] is not None:
                d["confidence"] = r["confidence"]
            out[r["sample_id"]][r["segment"]] = d
        return out

    def expert_verdicts(self, expl_id: int) -> dict[int, dict[int, str]]:
        out: dict[int, dict[int, str]] = {}
        for r in self.db.execute(
            "SELECT * FROM verdicts WHERE explanation_id=? AND source='expert' ORDER BY id", (expl_id,)
        ):
            out.setdefault(r["sample_id"], {})[r["segment"]] = r["verdict"]
        return out

    def expert_verdict_rows(self, expl_id: int) -> list[sqlite3.Row]:
        """Every verdict the expert gave on explanation ``expl_id`` (also those given again later), in the
        order given."""
        return self.db.execute(
            "SELECT * FROM verdicts WHERE explanation_id=? AND source='expert' ORDER BY id", (expl_id,)
        ).fetchall()

    def critic_verdicts(self, expl_id: int) -> list[tuple[int, int, str]]:
        """Every critic verdict on explanation ``expl_id`` as plain tuples (sample id, segment, verdict), in
        the order stored (a later one on the same segment replaces an earlier one)."""
        cur = self.db.cursor()
        cur.row_factory = None
        return cur.execute(
            "SELECT sample_id, segment, verdict FROM verdicts WHERE explanation_id=? AND source='critic' "
            "ORDER BY id",
            (expl_id,),
        ).fetchall()

    def sample_verdict_rows(self, expl_id: int, sample_id: int) -> list[sqlite3.Row]:
        """Every verdict (critic's and expert's) on one image of explanation ``expl_id``, in the order
        stored."""
        return self.db.execute(
            "SELECT * FROM verdicts WHERE explanation_id=? AND sample_id=? ORDER BY id", (expl_id, sample_id)
        ).fetchall()

    def has_verdicts(self, expl_id: int, source: str | None = None) -> bool:
        """Whether explanation ``expl_id`` has any verdict (from ``source``: 'critic' or 'expert')."""
        if source is None:
            q, args = "SELECT 1 FROM verdicts WHERE explanation_id=? LIMIT 1", (expl_id,)
        else:
            q, args = "SELECT 1 FROM verdicts WHERE explanation_id=? AND source=? LIMIT 1", (expl_id, source)
        return self.db.execute(q, args).fetchone() is not None

    def critiques(self, expl_id: int) -> list[sqlite3.Row]:
        """The critic's critiques of explanation ``expl_id`` (one per image and critique run), oldest
        first."""
        return self.db.execute(
            "SELECT * FROM critiques WHERE explanation_id=? ORDER BY id", (expl_id,)
        ).fetchall()

    # -- metrics --------------------------------------------------------------------------------------
    def save_metrics(
        self,
        run_id: int,
        model_id: int,
        split: str,
        values: dict[str, float | None],
        detail: dict | None = None,
    ) -> None:
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO metrics (run_id, model_id, split, name, value, detail) VALUES (?,?,?,?,?,?)",
                [
                    (run_id, model_id, split, k, v, json.dumps(detail) if detail else None)
                    for k, v in values.items()
                ],
            )
            params = {"run_id": run_id, "model_id": model_id, "split": split, "values": values}
            self.audit("metrics", params, {"detail": audit_log.json_hash(detail)})

    def accuracy_details(self, split: str, model_ids: list[int]) -> list[sqlite3.Row]:
        """The stored evaluations (run_id, model_id, detail) of the given models on ``split``: the accuracy
        rows that carry a detail, by run then as stored (empty for no models)."""
        ids = [int(m) for m in model_ids]
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        return self.db.execute(
            f"SELECT run_id, model_id, detail FROM metrics WHERE split=? AND name='accuracy' "
            f"AND detail IS NOT NULL AND model_id IN ({marks}) ORDER BY run_id, id",
            (split, *ids),
        ).fetchall()


def _verdict_params(
    expl_id: int,
    sample_id: int,
    segment: int,
    old: sqlite3.Row | None,
    new: str | None,
    new_source: str | None,
) -> dict:
    """An expert's change of one segment's verdict, as logged (segments numbered from 1, as shown)."""
    return {
        "explanation_id": expl_id,
        "sample_id": sample_id,
        "segment": segment + 1,
        "old": old["verdict"] if old else None,
        "old_source": old["source"] if old else None,
        "new": new,
        "new_source": new_source,
    }


def _confidence(value: object) -> float | None:
    """A verdict's confidence as stored: a probability in (0, 1], else None (never a made-up number)."""
    if value is None:
        return None
    p = float(value)  # type: ignore[arg-type]
    if not 0.0 < p <= 1.0:
        raise ProjectError(f"A verdict's confidence must be a probability in (0, 1], not {p}.")
    return p
