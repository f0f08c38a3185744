"""The audit report: every section with the project's own numbers, self-contained HTML, a PDF of several
pages whose bookmarks name the sections, and the audit status told as it is (intact, altered, absent)."""

from __future__ import annotations

import html
import io
import json
import re
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lvlmva_desktop.core.data.demo import create_demo_project
from lvlmva_desktop.core.method.critic import GroundTruthCritic
from lvlmva_desktop.core.method.explain import ExplainSettings
from lvlmva_desktop.core.method.metrics import comparison
from lvlmva_desktop.core.method.pipeline import (
    EvalSettings,
    align_model,
    environment,
    evaluate_models,
    explain_alignment_set,
    run_critique,
    sample_alignment_set,
    train_original,
)
from lvlmva_desktop.core.method.sampling import SamplingSettings
from lvlmva_desktop.core.method.segment import SegmentSettings
from lvlmva_desktop.core.method.train import AlignSettings, TrainSettings
from lvlmva_desktop.core.store import audit
from lvlmva_desktop.core.store.project import DATABASE, MANIFEST, Project
from lvlmva_desktop.lvlm.prompts import TemplateSet
from lvlmva_desktop.report.document import (
    SECTIONS,
    audit_status,
    gather_report,
    pct,
    render_html,
    signed_pct,
    write_report,
)
from lvlmva_desktop.report.figures import attribution_overlay
from lvlmva_desktop.report.pdf import write_pdf
from lvlmva_desktop.report.pdf_layout import ReportPDF, _find_fonts

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "report"
CPU = torch.device("cpu")
EDITED = "Edited by hand <b>after</b> the critique & checked."


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """A small demo after the whole method: simulated critic, one expert override, descriptions edited
    after the critique (version 2), RRR fine-tuning and both models evaluated."""
    root = create_demo_project(tmp_path_factory.mktemp("report") / "demo", n_train=96, n_test=48, size=32)
    with Project.open(root) as p:
        mid = train_original(p, "small_cnn", TrainSettings(epochs=1, seed=3), CPU)
        sid = sample_alignment_set(p, mid, SamplingSettings(n=6), CPU)
        eid = explain_alignment_set(p, mid, sid, ExplainSettings(n_background=4), SegmentSettings(), CPU)
        run_critique(p, eid, GroundTruthCritic(error_rate=0.0))
        first = p.alignment_members(sid)[0]["sample_id"]
        critic_v = p.effective_verdicts(eid)[first][0]["verdict"]
        flipped = "relevant" if critic_v == "spurious" else "spurious"
        p.set_expert_verdict(eid, first, 0, flipped)
        desc = dict(p.class_descriptions()[1])
        desc[p.classes[0]] = EDITED
        p.set_class_descriptions(desc)
        new = align_model(p, mid, eid, AlignSettings(epochs=1, lambda_=7.0, seed=5), CPU)
        evaluate_models(
            p, [mid, new], EvalSettings(n_attribution_images=4, n_background=4, min_group_size=1), CPU
        )
        crit_run = p.db.execute("SELECT id FROM runs WHERE kind='critique'").fetchone()[0]
        critique_text = p.critiques(eid)[0]["text"]
    return {
        "root": root,
        "before": mid,
        "after": new,
        "explanation": eid,
        "first": first,
        "critic_verdict": critic_v,
        "expert_verdict": flipped,
        "critique_run": crit_run,
        "critique_text": critique_text,
    }


@pytest.fixture(scope="module")
def report(built) -> dict:
    with Project.open(built["root"], read_only=True) as p:
        return gather_report(p, CPU)


@pytest.fixture(scope="module")
def page(report) -> str:
    return render_html(report)


def _text(page: str) -> str:
    """The page's visible text: tags to spaces, entities decoded, whitespace collapsed."""
    no_style = re.sub(r"<style.*?</style>", " ", page, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", no_style)).split())


def test_html_has_every_section_with_the_projects_numbers(built, report, page):
    text = _text(page)
    for i, title in enumerate(SECTIONS, 1):
        assert f"{i}. {title}" in text
    with Project.open(built["root"], read_only=True) as p:
        data_hash = p.data_hash()
        expected = comparison(p, built["before"], built["after"])
        shas = [m["sha256"] for m in p.models()]
        head = audit.verify_project(p).head
        assert p.prompt_templates() == {}  # the report read the templates without copying them in
    assert f"Data manifest hash (sha256) {data_hash}" in text
    # class descriptions: the current version 2 (edited, escaped) and version 1 used by the critique
    assert "Version 2 (current)" in text and "Not used by a critique of this round." in text
    assert f"Used by critique run {built['critique_run']}." in text
    # the summary names the version the critique read, not only the newest
    assert "Class descriptions version 1 used by the critique; version 2 saved since" in text
    assert html.escape(EDITED) in page and "<b>after</b>" not in page
    # the simulated critic is named as what it is, and its text is there
    assert "benchmark stand-in" in text
    assert html.escape(built["critique_text"].splitlines()[1]) in page
    # the expert's override, against the critic's verdict
    first = built["first"]
    assert "Expert overrides (1)" in text
    assert f"{first} 1 {built['critic_verdict']} {built['expert_verdict']}" in text
    assert f'id="img{first}"' in page and "1 override" in text
    # metrics: the headline and every group exactly as comparison() gives them
    assert (
        f"Average accuracy {pct(expected['before']['accuracy'])} {pct(expected['after']['accuracy'])}" in text
    )
    assert expected["groups"]
    for g in expected["groups"]:
        row = f"{g['label']} {g['group'] or '–'} {g['n']} {pct(g['before'])} {pct(g['after'])} {signed_pct(g['change'])}"
        assert row in text
    # models, seeds and settings of both training runs, template hashes, environment, audit head
    assert all(sha in text for sha in shas)
    assert "seeds: train.seed=3" in text and "seeds: align.seed=5" in text and "align.lambda = 7.0" in text
    for name, digest in TemplateSet.defaults().hashes().items():
        assert f"{name} default {digest}" in text
    assert f"torch {torch.__version__}" in text and environment(CPU)["device"] in text
    assert report["audit"]["ok"] and f"Head hash (newest entry) {head}" in text


def test_heatmaps_show_the_override_first_before_and_after(built, report):
    items = report["heatmaps"]["items"]
    assert len(items) == 4  # of 6 alignment images
    assert items[0]["sample_id"] == built["first"] and items[0]["why"] == "expert override"
    for h in items:
        before = np.asarray(Image.open(io.BytesIO(h["before_png"])))
        after = np.asarray(Image.open(io.BytesIO(h["after_png"])))
        assert before.shape == after.shape and before.shape[0] >= 160  # enlarged, same framing
        assert not np.array_equal(before, after)  # two models, two maps


def test_html_is_self_contained(page):
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page and "url(" not in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert all(h.startswith("#") for h in re.findall(r'href="([^"]*)"', page))


def test_overlay_colours_follow_the_sign():
    image = torch.full((3, 4, 4), 0.5)
    amap = torch.zeros(4, 4)
    amap[0, 0], amap[0, 1] = 1.0, -1.0
    img = np.asarray(attribution_overlay(image, amap, min_side=4)).astype(int)
    r, g, b = img[0, 0]
    assert r > b + 60  # positive evidence: red
    r, g, b = img[0, 1]
    assert b > r + 60  # negative evidence: blue
    assert tuple(img[2, 2]) == (128, 128, 128)  # no evidence: the image itself


def _pages(pdf: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page\b(?!s)", pdf))


def test_pdf_has_pages_and_bookmarks_for_every_section(built, tmp_path):
    with Project.open(built["root"], read_only=True) as p:
        written = write_report(p, tmp_path, CPU, pdf=True)
        data_hash = p.data_hash()
    assert [w.name for w in written] == ["report.html", "report.pdf"]
    pdf = (tmp_path / "report.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and _pages(pdf) >= 6
    titles = [t.decode("latin-1") for t in re.findall(rb"/Title \(([^)]*)\)\n>>", pdf)]
    assert titles[: len(SECTIONS)] == list(SECTIONS)
    try:
        from pypdf import PdfReader
    except ImportError:
        PdfReader = None
    if PdfReader is not None:  # the text itself, where a PDF reader is installed
        text = "".join(pg.extract_text() for pg in PdfReader(io.BytesIO(pdf)).pages)
        assert data_hash in text and "Audit log: intact" in text
    _save_page_pictures(tmp_path / "report.pdf")


def _save_page_pictures(path: Path) -> None:
    """Render the pages to PNG under tests/artifacts/report/ to be looked at, where a renderer exists."""
    try:
        import pymupdf
    except ImportError:
        pymupdf = None
    if pymupdf is None and shutil.which("pdftoppm") is None:
        return
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("page-*.png"):
        old.unlink()
    if pymupdf is not None:
        for i, pg in enumerate(pymupdf.open(str(path))):
            pg.get_pixmap(dpi=90).save(str(ARTIFACTS / f"page-{i + 1:02d}.png"))
    else:
        import subprocess

        subprocess.run(["pdftoppm", "-png", "-r", "90", str(path), str(ARTIFACTS / "page")], check=True)
    pictures = sorted(ARTIFACTS.glob("page-*.png"))
    assert pictures
    for pic in pictures:  # every page has something on it
        assert np.asarray(Image.open(pic).convert("L")).min() < 128


def test_pdf_without_unicode_fonts_transliterates(report, tmp_path):
    r = json.loads(json.dumps(report, default=lambda b: None))  # a copy; pictures dropped below
    r["alignment"]["images"] = []
    r["heatmaps"]["items"] = []
    r["heatmaps"]["colour_bar"] = report["heatmaps"]["colour_bar"]
    r["descriptions"]["history"][-1]["descriptions"]["benign"] = "naïve → 病变 “quoted”"
    path = write_pdf(r, tmp_path / "core-fonts.pdf", unicode_fonts=False)
    assert _pages(path.read_bytes()) >= 5
    core = ReportPDF("x", "now", unicode_fonts=False)
    assert core.t("naïve → 病变 “q” Ωmega") == 'naïve -> ?? "q" ?mega'
    if _find_fonts() is not None:
        dejavu = ReportPDF("x", "now")
        assert dejavu.t("naïve → 病变 Ωmega") == "naïve → ?? Ωmega"  # DejaVu has no CJK glyphs


def _copy(built, tmp_path) -> Path:
    root = tmp_path / "copy"
    shutil.copytree(built["root"], root)
    return root


def test_an_altered_audit_log_is_reported_as_tampered(built, report, tmp_path):
    root = _copy(built, tmp_path)
    con = sqlite3.connect(str(root / DATABASE))
    con.execute("UPDATE audit_log SET user='someone else' WHERE id=2")
    con.commit()
    con.close()
    with Project.open(root, read_only=True) as p:
        status = audit_status(p)
    assert status["ok"] is False and status["status"].startswith("TAMPERED")
    assert any("entry 2" in problem for problem in status["problems"])
    text = _text(render_html({**report, "audit": status}))
    assert "TAMPERED" in text and status["problems"][0] in text


def test_a_project_without_an_audit_log_says_so(built, report, tmp_path):
    root = _copy(built, tmp_path)
    with Project.open(root) as p:
        p.db.execute("DROP TABLE audit_log")
        removed = audit_status(p)  # the manifest still records entries: the log was removed
        manifest = json.loads((root / MANIFEST).read_text())
        manifest.pop(audit.ANCHOR_KEY, None)
        (root / MANIFEST).write_text(json.dumps(manifest))
        absent = audit_status(p)  # a project from before the audit log
    assert removed["ok"] is False and "removed" in removed["status"]
    assert absent["present"] is False and absent["ok"] is None and absent["status"] == "no audit log"
    text = _text(render_html({**report, "audit": absent}))
    assert "no audit log" in text and "cannot be verified" in text


def test_heatmaps_use_the_masks_the_aligned_model_was_trained_with(built, tmp_path):
    """Segments the consistency check held back (recorded with the model) are not in the report's masks."""
    from lvlmva_desktop.core.runtime.jobs import TaskState
    from lvlmva_desktop.report.figures import representative_heatmaps

    root = _copy(built, tmp_path)
    with Project.open(root) as p:
        eff = p.effective_verdicts(built["explanation"])
        held = [[sid, s] for sid, per in eff.items() for s, d in per.items()
                if d["verdict"] == "spurious" and d["source"] != "expert"]  # fmt: skip
        assert held, "the fixture's critic judged some segments spurious"
        info = json.loads(p.model_row(built["after"])["info"])
        info["mask_stats"]["held_back_segments"] = held
        p.db.execute("UPDATE models SET info=? WHERE id=?", (json.dumps(info), built["after"]))
        p.db.commit()
    with Project.open(root, read_only=True) as p:
        out = representative_heatmaps(
            p, built["explanation"], built["before"], built["after"], CPU, TaskState(), 4, 8
        )
    whys = {h["sample_id"]: h["why"] for h in out["items"]}
    expert_images = {sid for sid, per in eff.items() if any(d["source"] == "expert" for d in per.values())}
    for sid, why in whys.items():
        if sid not in expert_images:
            assert why == "no spurious segment", (sid, why)  # every critic 'spurious' segment was held back


def test_hundreds_of_classes_and_a_label_of_thousands_of_characters_fit_the_pdf(tmp_path):
    """400 classes and one label of 3,300 characters made a table row taller than a page: the PDF cuts such
    a cell and says so; the HTML holds the whole text."""
    from lvlmva_desktop.core.data.importing import import_csv_manifest
    from lvlmva_desktop.report.document import write_report

    d = tmp_path / "d"
    d.mkdir()
    long_label = "a very long class name " * 143 + "end"  # about 3,300 characters
    labels = [f"class {i:03d}" for i in range(399)] + [long_label]
    rows = ["path,label,split"]
    for i, label in enumerate(labels):
        Image.new("L", (8, 8), i % 256).save(d / f"{i}.png")
        rows.append(f'{i}.png,"{label}",train')
    (d / "m.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    report = import_csv_manifest(d / "m.csv")
    with Project.create(tmp_path / "p", "many", report.classes, (8, 8), 1) as p:
        p.add_samples(report)
        written = write_report(p, tmp_path / "out", torch.device("cpu"))
    assert [w.name for w in written] == ["report.html", "report.pdf"]
    pdf = (tmp_path / "out" / "report.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and len(pdf) > 10_000
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert html.escape(long_label) in page and "class 398" in page
    assert not list((tmp_path / "out").glob("*.tmp")) and not list((tmp_path / "out").glob("*.new"))


def test_a_failed_pdf_leaves_the_previous_report_whole(built, tmp_path, monkeypatch):
    from lvlmva_desktop.report import pdf as report_pdf
    from lvlmva_desktop.report.document import write_report

    root = built["root"]
    out = tmp_path / "out"
    with Project.open(root) as p:
        write_report(p, out, torch.device("cpu"))
        before = {f.name: f.read_bytes() for f in out.iterdir()}

        def broken(*args, **kwargs):
            raise RuntimeError("the PDF could not be laid out")

        monkeypatch.setattr(report_pdf, "write_pdf", broken)
        with pytest.raises(RuntimeError, match="could not be laid out"):
            write_report(p, out, torch.device("cpu"))
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before  # report.html not replaced alone
