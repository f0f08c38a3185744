"""Export of results and verdicts: every segment row, who decided it, and each model's stored metrics."""

from __future__ import annotations

import csv
import json

import torch

from lvlmva_desktop.core.data.demo import create_demo_project
from lvlmva_desktop.core.method.critic import GroundTruthCritic
from lvlmva_desktop.core.method.explain import ExplainSettings
from lvlmva_desktop.core.method.pipeline import (
    EvalSettings,
    evaluate_models,
    explain_alignment_set,
    run_critique,
    sample_alignment_set,
    train_original,
)
from lvlmva_desktop.core.method.sampling import SamplingSettings
from lvlmva_desktop.core.method.segment import SegmentSettings
from lvlmva_desktop.core.method.train import TrainSettings
from lvlmva_desktop.core.store.export import export_results
from lvlmva_desktop.core.store.project import Project


def test_export_writes_verdicts_with_sources_and_metrics(tmp_path):
    root = create_demo_project(tmp_path / "demo", n_train=96, n_test=48, size=32)
    cpu = torch.device("cpu")
    with Project.open(root) as p:
        mid = train_original(p, "small_cnn", TrainSettings(epochs=1), cpu)
        sid = sample_alignment_set(p, mid, SamplingSettings(n=6), cpu)
        eid = explain_alignment_set(p, mid, sid, ExplainSettings(n_background=4), SegmentSettings(), cpu)
        run_critique(p, eid, GroundTruthCritic(error_rate=0.0))
        first = p.alignment_members(sid)[0]["sample_id"]
        critic_v = p.effective_verdicts(eid)[first][0]["verdict"]
        flipped = "relevant" if critic_v == "spurious" else "spurious"
        p.set_expert_verdict(eid, first, 0, flipped)
        evaluate_models(p, [mid], EvalSettings(n_attribution_images=0), cpu)
        written = export_results(p, tmp_path / "out")
        n_segments = sum(len(v) for v in p.effective_verdicts(eid).values())
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [m["id"] for m in res["models"]] == [mid]
    assert res["models"][0]["test"]["accuracy"] is not None
    assert res["class_descriptions"]["version"] == 1
    rows = list(csv.DictReader(open(tmp_path / "out" / "verdicts.csv", encoding="utf-8")))
    assert len(rows) == n_segments == res["verdicts"]["segments"]
    row = next(r for r in rows if int(r["sample_id"]) == first and r["segment"] == "1")
    assert row["critic_verdict"] == critic_v and row["expert_verdict"] == flipped
    assert row["verdict_used"] == flipped and row["decided_by"] == "expert"
    assert res["verdicts"]["by_expert"] == 1
    assert all(p.is_file() for p in written)


def test_exported_cells_never_start_a_formula(tmp_path):
    """Class names and paths come from the site's manifest: a cell that would start a formula in a
    spreadsheet program (=, +, -, @) is written as text (a leading apostrophe); numbers stay numbers."""
    from PIL import Image

    from lvlmva_desktop.core.data.importing import import_csv_manifest
    from lvlmva_desktop.core.store.export import spreadsheet_safe

    d = tmp_path / "d"
    d.mkdir()
    names = ["=HYPERLINK(1)", "@SUM(A1)", "-2+3", "+cmd"]
    rows = ["path,label,split"]
    for i in range(8):
        (d / f"=img{i}.png").parent.mkdir(exist_ok=True)
        Image.new("L", (16, 16), 30 * i).save(d / f"=img{i}.png")
        rows.append(f"=img{i}.png,{names[i % 4]},{'train' if i < 6 else 'test'}")
    (d / "m.csv").write_text("\n".join(rows) + "\n")
    report = import_csv_manifest(d / "m.csv")
    p = Project.create(tmp_path / "p", "p", report.classes, (16, 16), 1)
    p.add_samples(report)
    cpu = torch.device("cpu")
    mid = train_original(p, "mlp", TrainSettings(epochs=1), cpu)
    sid = sample_alignment_set(p, mid, SamplingSettings(n=4), cpu)
    eid = explain_alignment_set(
        p, mid, sid, ExplainSettings(n_background=2), SegmentSettings(n_components=2), cpu
    )
    run_critique(p, eid, GroundTruthCritic(error_rate=0.0))
    export_results(p, tmp_path / "out")
    p.close()
    text = (tmp_path / "out" / "verdicts.csv").read_text(encoding="utf-8")
    cells = [c for line in text.splitlines()[1:] for c in next(csv.reader([line]))]
    assert cells and not any(c.startswith(("=", "+", "-", "@")) for c in cells)
    assert any(
        c.startswith("'=HYPERLINK") or c.startswith("'@SUM") or c.startswith("'-2+3") or c.startswith("'+cmd")
        for c in cells
    )
    assert spreadsheet_safe(-1) == -1 and spreadsheet_safe("benign") == "benign"
