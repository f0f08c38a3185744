"""Export what the project says now: model versions, their test metrics, and every verdict with who gave it.

Writes two files into a folder: ``results.json`` (for scripts and auditors) and ``verdicts.csv`` (one row
per segment of the latest explanation: the critic's verdict, the expert's, the one used, who decided).
The full audit report (HTML/PDF, hash chain) is a separate feature; this is the data behind it.
"""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

from lvlmva_desktop.core.method.metrics import stored_evaluations
from lvlmva_desktop.core.store.project import Project, sha256_file


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8", newline="")
    os.replace(tmp, path)


def verdict_rows(project: Project, expl_id: int) -> list[dict]:
    """One row per (image, segment) of an explanation: critic verdict, expert verdict, effective, source."""
    critic: dict[tuple[int, int], str] = {}
    expert: dict[tuple[int, int], str] = {}
    for r in project.db.execute("SELECT * FROM verdicts WHERE explanation_id=? ORDER BY id", (expl_id,)):
        (expert if r["source"] == "expert" else critic)[(r["sample_id"], r["segment"])] = r["verdict"]
    paths = {r["id"]: (r["path"], r["label"], r["grp"]) for r in project.samples()}
    rows = []
    for sid, segs in sorted(project.effective_verdicts(expl_id).items()):
        path, label, grp = paths.get(sid, ("", -1, None))
        for seg, d in sorted(segs.items()):
            rows.append(
                {
                    "sample_id": sid,
                    "path": path,
                    "class": project.classes[label] if 0 <= label < len(project.classes) else "",
                    "group": grp or "",
                    "segment": seg + 1,  # numbered from 1, as shown to the expert and the LVLM
                    "critic_verdict": critic.get((sid, seg), ""),
                    "expert_verdict": expert.get((sid, seg), ""),
                    "verdict_used": d["verdict"],
                    "decided_by": d["source"],
                }
            )
    return rows


#: a cell starting with one of these is a formula to a spreadsheet program (CSV/formula injection)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: object) -> object:
    """A text cell a spreadsheet program will show as text, never run: one that would start a formula
    (a class name or file path such as ``=HYPERLINK(...)``) gets a leading apostrophe. Numbers stay."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def export_results(project: Project, folder: str | Path) -> list[Path]:
    """Write results.json and verdicts.csv into ``folder`` (created if needed); return the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    models = project.models()
    evals = stored_evaluations(project, [m["id"] for m in models])
    version, descriptions = project.class_descriptions()
    expl_id = project.latest_id("explanations")
    rows = verdict_rows(project, expl_id) if expl_id is not None else []
    results = {
        "project": project.manifest["name"],
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "data_hash": project.data_hash(),
        "classes": project.classes,
        "class_descriptions": {"version": version, "texts": descriptions},
        "models": [
            {
                "id": m["id"],
                "name": m["name"],
                "kind": m["kind"],
                "parent_id": m["parent_id"],
                "sha256": m["sha256"],
                "test": evals[m["id"]][1].to_dict() if m["id"] in evals else None,
                "evaluation_run": evals[m["id"]][0] if m["id"] in evals else None,
            }
            for m in models
        ],
        "explanation_id": expl_id,
        "verdicts": {
            "segments": len(rows),
            "spurious": sum(r["verdict_used"] == "spurious" for r in rows),
            "by_expert": sum(r["decided_by"] == "expert" for r in rows),
        },
    }
    out_json = folder / "results.json"
    _atomic_text(out_json, json.dumps(results, indent=2))
    out_csv = folder / "verdicts.csv"
    fields = [
        "sample_id",
        "path",
        "class",
        "group",
        "segment",
        "critic_verdict",
        "expert_verdict",
        "verdict_used",
        "decided_by",
    ]
    tmp = out_csv.with_suffix(".csv.tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows({k: spreadsheet_safe(v) for k, v in r.items()} for r in rows)
    os.replace(tmp, out_csv)
    written = [out_json, out_csv]
    if not getattr(project, "read_only", False):  # a read-only viewer cannot log; the export changes nothing
        project.audit(
            "export",
            {"folder": str(folder.resolve()), "files": [p.name for p in written], "explanation_id": expl_id},
            {p.name: sha256_file(p) for p in written},
        )
    return written
