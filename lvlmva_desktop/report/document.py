"""The audit report: what was changed, on which data, with which model, prompts and verdicts, as one file.

``gather_report`` reads a project into a plain dict (nothing is written to the project); ``render_html``
turns it into a self-contained HTML page (inline CSS, pictures as data: URIs, no outside reference) with
the Jinja2 template in resources/report/; ``pdf.write_pdf`` lays the same content out as PDF pages.
``write_report`` does all three. The report covers the latest alignment round: the explanation the newest
RRR run used (else the newest explanation), its critique, verdicts and expert overrides, and the model
before and after.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from pathlib import Path

import torch
from jinja2 import Environment, FileSystemLoader, select_autoescape

from lvlmva_desktop.core.method.metrics import comparison
from lvlmva_desktop.core.method.segment import evidence_map, recorded_evidence
from lvlmva_desktop.core.runtime.jobs import TaskState, ensure_state
from lvlmva_desktop.core.runtime.timefmt import when
from lvlmva_desktop.core.store import audit
from lvlmva_desktop.core.store.export import verdict_rows
from lvlmva_desktop.core.store.project import Project, ProjectError, current_user, sha256_file
from lvlmva_desktop.lvlm.prompts import TEMPLATE_NAMES, TemplateSet, default_texts, resources_dir
from lvlmva_desktop.report.figures import data_uri, representative_heatmaps, thumbnail

log = logging.getLogger(__name__)

SECTIONS = (
    "Project and data",
    "Class descriptions",
    "Critic, LVLM and prompt templates",
    "Critiques, verdicts and expert overrides",
    "Training runs and seeds",
    "Metrics before and after",
    "Heatmaps before and after",
    "Software and device",
    "Audit log",
)
SHORT_TEXT = 220  # characters of a critic text shown before it is folded away


def settings_text(d: dict, prefix: str = "") -> list[tuple[str, str]]:
    """A nested settings dict as (dotted key, value) pairs, for tables."""
    out: list[tuple[str, str]] = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += settings_text(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", json.dumps(v) if not isinstance(v, str) else v))
    return out


def _short(text: str) -> str:
    """The first words of a critic text on one line; the report folds the whole text away."""
    flat = " ".join(text.split())
    return flat if len(flat) <= SHORT_TEXT else flat[:SHORT_TEXT].rsplit(" ", 1)[0] + " …"


def _seeds(d: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings_text(d) if k == "seed" or k.endswith(".seed"))


def _run_row(r: sqlite3.Row) -> dict:
    settings = json.loads(r["settings"] or "{}")
    results = json.loads(r["results"] or "{}")
    strength = ""
    if isinstance(results.get("strength"), dict):
        from lvlmva_desktop.core.method.strength import StrengthChoice

        try:
            strength = StrengthChoice(**results["strength"]).summary()
        except TypeError:  # a record this version cannot read: shown among the settings only
            strength = ""
    return {
        "strength": strength,
        "id": r["id"],
        "kind": r["kind"],
        "status": r["status"],
        "user": r["user"] or "",
        "started": when(r["started"]),
        "duration": f"{r['finished'] - r['started']:.1f} s" if r["finished"] and r["started"] else "",
        "seeds": _seeds(settings),
        "settings": settings,
        "results": results,
        "error": r["error"] or "",
    }


# -- the parts -------------------------------------------------------------------------------------------
def _qualification(project: Project) -> dict | None:
    """The latest finished `lvlmva qualify` run: its table rows and headline (core/method/qualify.py)."""
    row = project.latest_finished_run("qualify")
    if row is None:
        return None
    from lvlmva_desktop.core.method.qualify import headline

    res = json.loads(row["results"] or "{}")
    if not res.get("rows"):
        return None
    return {
        "run_id": row["id"],
        "started": when(row["started"]),
        "user": row["user"] or "",
        "origin": res.get("origin", ""),
        "rows": [{"method": k, **v} for k, v in res["rows"].items()],
        "consistency": res.get("consistency", {}),
        "headline": headline(res),
    }


def _spot_check(project: Project, expl_id: int | None) -> dict | None:
    """The newest blind spot-check of the critic (core/method/spotcheck.py), recomputed from its stored sample and
    answers and matched with its audit entry; its figures as the report prints them."""
    from lvlmva_desktop.core.method.spotcheck import STRATA, latest_spot_check

    sc = latest_spot_check(project, expl_id)
    if sc is None:
        return None
    res = sc["result"]

    def iv(r) -> str:
        return "" if r is None else f"{r[0]:.2f} to {r[1]:.2f}"

    rows = []
    for v in STRATA:
        st = res.strata.get(v)
        if st is None or st.drawn == 0:
            continue
        rows.append(
            {
                "verdict": v,
                "population": st.population,
                "drawn": st.drawn,
                "counted": st.counted,
                "agreed": st.agreed,
                "accuracy": st.accuracy,
                "interval": iv(st.interval),
                "expert_undecided": st.expert_undecided,
            }
        )
    return {
        **{k: v for k, v in sc.items() if k != "result"},
        "n_drawn": res.n_drawn,
        "n_answered": res.n_answered,
        "n_counted": res.n_counted,
        "n_agreed": res.n_agreed,
        "n_expert_undecided": res.n_expert_undecided,
        "accuracy": res.accuracy,
        "interval": iv(res.interval),
        "rows": rows,
    }


def _round(project: Project) -> tuple[int | None, int | None, int | None]:
    """(explanation, model before, model after) of the latest alignment round; None where missing."""
    align = project.latest_finished_run("align")
    if align is not None:
        s, res = json.loads(align["settings"]), json.loads(align["results"] or "{}")
        return s.get("explanation_id"), s.get("model_id"), res.get("model_id")
    expl = project.latest_id("explanations")
    if expl is not None:
        return expl, project.explanation_model(expl), None
    return None, project.first_unaligned_model(), None


def _data(project: Project) -> dict:
    splits = project.split_counts()
    n_masks = project.count_with_masks()
    imports = [
        {
            "created": when(r["created"]),
            "source": r["source"],
            "n": r["n_imported"],
            "skipped": r["n_skipped"],
        }
        for r in project.imports()
    ]
    return {
        "hash": project.data_hash(),
        "n_images": sum(splits.values()),
        "splits": splits,
        "with_masks": n_masks,
        "imports": imports,
    }


def _descriptions(project: Project, expl_id: int | None) -> dict:
    history = project.class_descriptions_history()
    used: dict[int, list[int]] = {}
    for r in project.runs("critique"):
        s = json.loads(r["settings"] or "{}")
        if expl_id is None or s.get("explanation_id") == expl_id:
            used.setdefault(s.get("class_descriptions_version"), []).append(r["id"])
    current = history[-1]["version"] if history else None
    for h in history:
        h["created"] = when(h["created"])
        h["current"] = h["version"] == current
        h["critique_runs"] = used.get(h["version"], [])
    used_versions = sorted(v for v in used if v is not None)
    if not used_versions or used_versions == [current]:
        summary = f"version {current}" if current is not None else "none"
    else:  # the critique of this round read other descriptions than the ones saved now
        summary = f"version {', '.join(map(str, used_versions))} used by the critique; version {current} saved since"
    return {"current": current, "used": used_versions, "summary": summary, "history": history}


def _critic(project: Project, expl_id: int | None) -> dict:
    runs = [
        _run_row(r)
        for r in project.runs("critique")
        if expl_id is not None and json.loads(r["settings"] or "{}").get("explanation_id") == expl_id
    ]
    have = project.prompt_templates()  # read only: the report must not copy the defaults into the project
    defaults = default_texts()
    ts = TemplateSet(
        {n: have[n]["text"] if n in have else defaults[n] for n in TEMPLATE_NAMES},
        {n: int(have[n]["version"]) if n in have else 0 for n in TEMPLATE_NAMES},
    )
    out: dict = {"runs": runs, "kind": "none", "name": "", "description": "No critique was run.", "pairs": []}
    used: dict[str, str] = {}
    if runs:
        last = runs[-1]
        ident = dict(last["settings"].get("critic") or {})
        kind = ident.get("kind", "")
        out["name"] = last["settings"].get("critic_name", "")
        if kind == "ground_truth_simulated":
            out["kind"] = "simulated"
            out["description"] = (
                "Simulated critic: a benchmark stand-in that judges segments from the known artefact masks "
                "(no LVLM was involved). Its verdicts stand in for an LVLM's only on benchmark data."
            )
        elif kind == "expert":
            out["kind"] = "expert"
            out["description"] = "The expert's own verdicts, entered by hand; no LVLM was involved."
        elif kind == "lvlm":
            out["kind"] = "lvlm"
            out["description"] = "A vision-language model (critic) and a judge turned its text into verdicts."
            used = dict(ident.get("templates") or {})
        else:
            out["kind"] = kind or "unknown"
            out["description"] = "A critic of an unrecognised kind."
        ident.pop("templates", None)
        ident.pop("template_versions", None)
        out["pairs"] = settings_text(ident)
    hashes = ts.hashes()
    out["templates"] = [
        {
            "name": n,
            "version": ts.versions[n],
            "sha256": hashes[n],
            "used": used.get(n, ""),
            "same": (used[n] == hashes[n]) if n in used else None,
        }
        for n in TEMPLATE_NAMES
    ]
    return out


def model_input_text(row: sqlite3.Row) -> str:
    """A model version's architecture and preprocessing in words (recorded with it)."""
    from lvlmva_desktop.core.method.models import ModelSpec

    spec = ModelSpec.from_dict(json.loads(row["spec"]))
    return f"{spec.arch}; {spec.preprocessing().describe(tuple(spec.image_size))}"


def attribution_text(settings: dict) -> str:
    """The attribution method an explanation used, and why when it is not the one asked for."""
    used = settings.get("attribution", {})
    method = used.get("method") or settings.get("explain", {}).get("method", "deeplift_shap")
    name = {"deeplift_shap": "DeepLIFT-SHAP", "input_x_gradient": "input x gradient"}.get(
        method, "integrated gradients"
    )
    return name + (f" ({used['note']})" if used.get("note") else "")


def _alignment(project: Project, expl_id: int | None) -> dict | None:
    if expl_id is None:
        return None
    from lvlmva_desktop.core.views.viewer import load_samples

    row, t = project.explanation(expl_id)
    ids = t["sample_ids"].tolist()
    rows = verdict_rows(project, expl_id)
    by_sample: dict[int, list[dict]] = {}
    for r in rows:
        by_sample.setdefault(r["sample_id"], []).append(r)
    latest: dict[int, sqlite3.Row] = {c["sample_id"]: c for c in project.critiques(expl_id)}
    entropy = project.alignment_entropies(row["set_id"])
    overrides = [
        {
            "sample_id": r["sample_id"],
            "segment": r["segment"] + 1,
            "expert": r["verdict"],
            "author": r["author"],
            "time": when(r["created"]),
        }
        for r in project.expert_verdict_rows(expl_id)
    ]
    critic_of = {(r["sample_id"], r["segment"]): r["critic_verdict"] for r in rows}
    for o in overrides:
        o["critic"] = critic_of.get((o["sample_id"], o["segment"]), "")
    images = []
    info = {r["id"]: r for r in project.samples()}
    pics = load_samples(project, ids) if ids else None
    # the thumbnails number the segments where the critic's overlay did: at their evidence's centre
    evidence_maps = evidence_map(t["maps"], recorded_evidence(row["settings"]))
    for k, sid in enumerate(ids):
        c = latest.get(sid)
        raw = json.loads(c["raw"]) if c is not None and c["raw"] else {}
        text = (c["text"] or "").strip() if c is not None else ""
        segs = by_sample.get(sid, [])
        evidence = t["evidence"][k].tolist() if "evidence" in t else []
        for s in segs:
            s["evidence"] = evidence[s["segment"] - 1] if s["segment"] - 1 < len(evidence) else None
        sample = info[sid]
        images.append(
            {
                "sample_id": sid,
                "rank": k + 1,
                "path": sample["path"],
                "class": project.classes[sample["label"]],
                "group": sample["grp"] or "",
                "entropy": entropy.get(sid),
                "critic": c["critic"] if c is not None else "",
                "text": text,
                "short": _short(text),
                "judge": (raw.get("judge_output") or "").strip(),
                "verdicts": segs,
                "n_overrides": sum(s["decided_by"] == "expert" for s in segs),
                "thumb": thumbnail(pics.x[k], t["segments"][k].long(), evidence_maps[k]),
            }
        )
    return {
        "explanation_id": expl_id,
        "method": attribution_text(json.loads(row["settings"] or "{}")),
        "set_id": row["set_id"],
        "model_id": row["model_id"],
        "settings": json.loads(row["settings"] or "{}"),
        "images": images,
        "overrides": overrides,
        "n_segments": len(rows),
        "spurious": sum(r["verdict_used"] == "spurious" for r in rows),
        "undecided": sum(r["verdict_used"] == "undecided" for r in rows),
        "by_expert": sum(r["decided_by"] == "expert" for r in rows),
    }


def audit_status(project: Project) -> dict:
    """The audit log's verification (core/store/audit.py), or "no audit log" where the table was never made."""
    from lvlmva_desktop.core.store.project import MANIFEST

    try:
        anchor = audit.read_anchor(project.root / MANIFEST)
    except (OSError, ValueError):
        anchor = None
    out = {"present": False, "ok": None, "status": "no audit log", "n_entries": 0, "head": "", "problems": [],
           "warnings": [], "anchor": anchor, "recent": []}  # fmt: skip
    if not project.has_audit_log():
        if anchor and int(anchor.get("id") or 0) > 0:  # the manifest knows entries: the table was removed
            out.update(ok=False, status="TAMPERED: the audit log was removed",
                       problems=[f"the manifest records {anchor['id']} entries but the log table is gone"])  # fmt: skip
        return out
    v = audit.verify_project(project)
    status = "intact" if v.ok else "TAMPERED: the log does not verify"
    if v.ok and v.n_entries == 0:
        status = "empty (no entry yet)"
    recent = [
        {"id": e["id"], "time": when(e["time"]), "user": e["user"], "action": e["action"]}
        for e in audit.entries(project.db)[-12:]
    ]
    out.update(
        present=True,
        ok=v.ok,
        status=status,
        n_entries=v.n_entries,
        head=v.head,
        problems=list(v.problems),
        warnings=list(getattr(v, "warnings", [])),
        recent=recent,
    )
    return out


# -- the whole report -----------------------------------------------------------------------------------
def gather_report(
    project: Project,
    device: torch.device,
    state: TaskState | None = None,
    n_heatmaps: int = 4,
    n_candidates: int = 48,
) -> dict:
    """Everything the report shows, read from the project (nothing is written to it)."""
    from lvlmva_desktop.core.method.pipeline import environment

    state = ensure_state(state)
    expl_id, before, after = _round(project)
    state.progress(0.1, None, "reading the project")
    models = [
        {
            "id": m["id"],
            "name": m["name"],
            "kind": m["kind"],
            "input": model_input_text(m),
            "parent_id": m["parent_id"],
            "run_id": m["run_id"],
            "sha256": m["sha256"],
            "created": when(m["created"]),
        }
        for m in project.models()
    ]
    from lvlmva_desktop.core.store.integrity import verify_content

    state.progress(0.0, None, "verifying the project's content")
    content = verify_content(project, state.child(0.0, 0.1))
    if not content.ok:
        first = [p for c in content.checks for p in c.problems][:5]
        raise ProjectError(
            "The report was not written: the project's content differs from what its audit log recorded ("
            + "; ".join(first)
            + (f"; {content.n_problems - len(first)} more" if content.n_problems > len(first) else "")
            + "). A report must show only verified content; `lvlmva audit PROJ --verify` lists every difference."
        )
    runs = [_run_row(r) for r in project.runs()]
    metrics = comparison(project, before, after) if before is not None else None
    state.check()
    state.progress(0.1, None, "verdicts and thumbnails")
    alignment = _alignment(project, expl_id)
    state.check()
    state.progress(0.3, None, "heatmaps before and after")
    heatmaps = representative_heatmaps(
        project, expl_id, before, after, device, state.child(0.3, 1.0), n_heatmaps, n_candidates
    )
    m = project.manifest
    return {
        "sections": SECTIONS,
        "generated": when(time.time()),
        "generated_by": current_user(),
        "project": {
            "name": m.get("name", ""),
            "root": str(project.root.resolve()),
            "created": when(m.get("created")),
            "classes": project.classes,
            "image_size": f"{project.image_size[0]} x {project.image_size[1]}",
            "channels": project.channels,
            "schema_version": m.get("schema_version"),
        },
        "data": _data(project),
        "descriptions": _descriptions(project, expl_id),
        "critic": _critic(project, expl_id),
        "spot_check": _spot_check(project, expl_id),
        "alignment": alignment,
        "training": [r for r in runs if r["kind"] in ("train", "align", "import_model")],
        "runs": runs,
        "models": models,
        "before": before,
        "after": after,
        "metrics": metrics,
        "qualification": _qualification(project),
        "heatmaps": heatmaps,
        "environment": environment(device),
        "audit": audit_status(project),
        "content": content.to_dict(),
    }


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and v == v  # not None, not a missing template value, not NaN


def pct(v: float | None) -> str:
    return f"{100 * v:.1f}%" if _number(v) else "n/a"


def signed_pct(v: float | None) -> str:
    """A change of a share, in percentage points."""
    return f"{100 * v:+.1f} pp" if _number(v) else ""


def render_html(report: dict) -> str:
    """The report as one self-contained HTML page (the template escapes every text from the project)."""
    env = Environment(
        loader=FileSystemLoader(str(resources_dir() / "report")),
        autoescape=select_autoescape(["html", "j2"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(uri=data_uri, pct=pct, spct=signed_pct)
    return env.get_template("report.html.j2").render(r=report, SHORT_TEXT=SHORT_TEXT)


def write_report(
    project: Project,
    folder: str | Path,
    device: torch.device,
    pdf: bool = True,
    state: TaskState | None = None,
) -> list[Path]:
    """Write report.html (and report.pdf) into ``folder``; returns the paths written. The report is logged
    in the audit log with each file's sha256 (unless the project is open read-only), so a report handed
    on can be matched with the project it came from."""
    state = ensure_state(state)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    report = gather_report(project, device, state.child(0.0, 0.7))
    state.check()
    state.progress(0.7, None, "writing the HTML report")
    html_path, pdf_path = folder / "report.html", folder / "report.pdf"
    html_tmp, pdf_tmp = folder / "report.html.tmp", folder / "report.pdf.new"
    try:
        html_tmp.write_text(render_html(report), encoding="utf-8")
        if pdf:
            from lvlmva_desktop.report.pdf import write_pdf

            state.check()
            state.progress(0.8, None, "writing the PDF report")
            write_pdf(report, pdf_tmp)
    except BaseException:
        # neither file is replaced unless both were made: an old report stays whole
        for t in (html_tmp, pdf_tmp):
            t.unlink(missing_ok=True)
        raise
    os.replace(html_tmp, html_path)
    written = [html_path]
    if pdf:
        os.replace(pdf_tmp, pdf_path)
        written.append(pdf_path)
    if not getattr(project, "read_only", False):  # a read-only viewer cannot log; the report changes nothing
        project.audit(
            "report",
            {
                "folder": str(folder.resolve()),
                "files": [p.name for p in written],
                "explanation_id": report["alignment"]["explanation_id"] if report["alignment"] else None,
                "models": [report["before"], report["after"]],
                "audit_head_in_report": report["audit"]["head"],
            },
            {p.name: sha256_file(p) for p in written},
        )
    state.progress(1.0, None, "report written")
    log.info("audit report written: %s", ", ".join(map(str, written)))
    return written
