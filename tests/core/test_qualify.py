"""Qualification on a site's own data (core/method/qualify.py, `lvlmva qualify`): the table of ERM, RRR with the
true masks and LVLM-VA with simulated critics, kept in the project and shown in the report."""

import json
import re
from html import escape as html_escape

import pytest
import torch

from lvlmva_desktop.cli import main
from lvlmva_desktop.core.data.benchsets import generate_isic_like
from lvlmva_desktop.core.data.importing import import_csv_manifest
from lvlmva_desktop.core.method.qualify import ERM, GT, headline, qualify, sim_row, summary_figures, table
from lvlmva_desktop.core.method.settings import PipelineSettings
from lvlmva_desktop.core.store.project import Project, ProjectError

CPU = torch.device("cpu")
HEADLINE = re.compile(
    r"^qualify: sim@0\.87 recovers (-?\d+%|n/a) of the WGA gap \((.*)ERM \d\.\d{3} -> RRR-GT \d\.\d{3}\), "
    r"accuracy change [+-]\d\.\d{3}$"
)


def small_settings() -> PipelineSettings:
    s = PipelineSettings()
    s.train.epochs = 3
    s.sampling.n = 40
    s.align.epochs = 1
    s.evaluate.min_group_size = 1
    return s


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return generate_isic_like(
        tmp_path_factory.mktemp("isic") / "data", seed=0, n_train=160, n_test=80, size=32
    )


def _project(path, manifest, masks=True) -> Project:
    report = import_csv_manifest(manifest)
    if not masks:
        for s in report.samples:
            s.mask_path = None
    p = Project.create(path, "q", report.classes, (32, 32), 3)
    p.add_samples(report)
    return p


def test_qualify_runs_the_table_and_keeps_it_in_the_project(tmp_path, manifest):
    with _project(tmp_path / "p", manifest) as p:
        res = qualify(p, small_settings(), CPU, accuracies=(1.0, 0.87))
        assert list(res["rows"]) == [ERM, GT, sim_row(1.0), sim_row(0.87)]
        for name, row in res["rows"].items():
            assert 0 <= row["accuracy"] <= 1 and 0 <= row["wga"] <= 1, name
            assert row["reliance"] is None or 0 <= row["reliance"] <= 1
        assert res["rows"][ERM]["strength"] is None and res["rows"][GT]["strength"] is not None
        assert res["n_align"] == 40 and res["n_train"] == 160 and res["n_test"] == 80
        c = res["consistency"]["0.87"]
        assert c["true_spurious"] + c["false_spurious"] == c["judged_spurious"]
        assert c["held_back_true_spurious"] + c["held_back_false_spurious"] == c["held_back"]
        assert res["verdict_accuracy"]["1.00"] == 1.0
        text = table(res)
        assert text.splitlines()[-1] == headline(res)
        assert HEADLINE.match(headline(res)), headline(res)
        # kept as a "qualify" run, with its settings; no model version was made
        run = p.db.execute("SELECT * FROM runs WHERE kind='qualify'").fetchone()
        assert run["status"] == "finished"
        assert json.loads(run["results"])["rows"][ERM]["accuracy"] == res["rows"][ERM]["accuracy"]
        assert json.loads(run["settings"])["accuracies"] == [1.0, 0.87]
        assert p.models() == []


def test_the_headline_is_the_share_of_the_gap():
    rows = {
        ERM: {"accuracy": 0.70, "wga": 0.20},
        GT: {"accuracy": 0.90, "wga": 0.80},
        sim_row(0.87): {"accuracy": 0.85, "wga": 0.65},
    }
    res = {"rows": rows, **summary_figures(rows)}
    assert res["gap"] == pytest.approx(0.6)
    assert res["recovered"][sim_row(0.87)] == pytest.approx(0.75)
    assert headline(res) == (
        "qualify: sim@0.87 recovers 75% of the WGA gap (ERM 0.200 -> RRR-GT 0.800), accuracy change +0.150"
    )
    rows[GT]["wga"] = 0.15  # nothing to recover: said, not divided by
    res = {"rows": rows, **summary_figures(rows)}
    assert "recovers n/a of the WGA gap (no gap to recover (-0.050): ERM 0.200 -> RRR-GT 0.150)" in headline(
        res
    )


def test_qualify_needs_masks_and_groups(tmp_path, manifest):
    with _project(tmp_path / "nomask", manifest, masks=False) as p:
        with pytest.raises(ProjectError, match="ground-truth artefact masks"):
            qualify(p, small_settings(), CPU)
        assert p.db.execute("SELECT COUNT(*) FROM runs WHERE kind='qualify'").fetchone()[0] == 0


def test_qualify_from_the_command_line_and_in_the_report(tmp_path, manifest, capsys):
    proj = tmp_path / "cli"
    assert main(["import", str(proj), "--csv", str(manifest), "--quiet", "--image-size", "32"]) == 0
    small = ["--set", "train.epochs=2", "--set", "sampling.n=40", "--set", "align.epochs=1"]
    small += ["--set", "evaluate.min_group_size=1", "--set", "evaluate.n_attribution_images=4"]
    capsys.readouterr()
    assert main(["qualify", str(proj), "--quiet", "--device", "cpu", "--seed", "1", *small]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    told = [line for line in out if line.startswith("setting ")]  # where each non-default came from
    assert "setting train.epochs = 2 (from --set)" in told
    out = [line for line in out if not line.startswith("setting ")]
    assert out[0].startswith("Qualification on 160 training / 80 test images")
    assert any(line.startswith("LVLM-VA sim@0.42 +check") for line in out)
    assert HEADLINE.match(out[-1]), out[-1]
    assert main(["report", str(proj), "--out", str(tmp_path / "rep"), "--no-pdf", "--device", "cpu"]) == 0
    html = (tmp_path / "rep" / "report.html").read_text(encoding="utf-8")
    assert "Qualification on this data" in html and html_escape(out[-1], quote=False) in html
