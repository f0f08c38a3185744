"""The blind spot-check of the critic (core/method/spotcheck.py): the stratified draw, the Wilson interval, the
weighted score, what an accuracy means (interpolated between measured points), the stored run with its
audit entry and expert verdicts, the picture shown, and the report's section."""

from __future__ import annotations

import html
import json
import random
import re
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from lvlmva_desktop.core.data.demo import create_demo_project
from lvlmva_desktop.core.data.pictures import MASK_COLOUR
from lvlmva_desktop.core.method.critic import GroundTruthCritic
from lvlmva_desktop.core.method.explain import ExplainSettings
from lvlmva_desktop.core.method.pipeline import (
    explain_alignment_set,
    run_critique,
    sample_alignment_set,
    train_original,
)
from lvlmva_desktop.core.method.qualify import sim_row
from lvlmva_desktop.core.method.sampling import SamplingSettings
from lvlmva_desktop.core.method.segment import SegmentSettings
from lvlmva_desktop.core.method.spotcheck import (
    SPOT_CHECK,
    MeasuredPoints,
    SpotItem,
    allocate,
    benchmark_points,
    critic_population,
    draw_sample,
    gap_share,
    ground_truth_answers,
    interpolate,
    latest_spot_check,
    measured_points,
    save_spot_check,
    score,
    segment_picture,
    wilson_interval,
)
from lvlmva_desktop.core.method.train import TrainSettings
from lvlmva_desktop.core.store import audit
from lvlmva_desktop.core.store.integrity import verify_content
from lvlmva_desktop.core.store.project import Project, ProjectError
from lvlmva_desktop.report.document import gather_report, render_html
from lvlmva_desktop.report.pdf import write_pdf

ROOT = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")


# -- the numbers ------------------------------------------------------------------------------------------
def test_wilson_interval_known_values_and_coverage():
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    # about 95% of intervals hold the true accuracy (40 verdicts of a 0.87 critic)
    rng = random.Random(0)
    trials, held = 2000, 0
    for _ in range(trials):
        k = sum(rng.random() < 0.87 for _ in range(40))
        lo, hi = wilson_interval(k, 40)
        held += lo <= 0.87 <= hi
    assert 0.92 <= held / trials <= 0.98


def test_allocation_is_proportional_with_a_floor_per_stratum():
    a = allocate({"spurious": 30, "relevant": 270, "undecided": 0}, 40)
    assert a == {"spurious": 5, "relevant": 35, "undecided": 0}  # 4 proportional, raised to 5
    a = allocate({"spurious": 100, "relevant": 300, "undecided": 0}, 40)
    assert a == {"spurious": 10, "relevant": 30, "undecided": 0}  # exactly proportional
    a = allocate({"spurious": 2, "relevant": 100, "undecided": 3}, 20)
    assert a == {"spurious": 2, "relevant": 15, "undecided": 3}  # small strata whole
    assert allocate({"spurious": 3, "relevant": 4, "undecided": 0}, 50) == {
        "spurious": 3,
        "relevant": 4,
        "undecided": 0,
    }
    for n in range(1, 57):
        a = allocate({"spurious": 7, "relevant": 40, "undecided": 9}, n)
        assert sum(a.values()) == n and a["spurious"] <= 7 and a["undecided"] <= 9


def _items(verdict: str, n: int, start: int = 0) -> list[SpotItem]:
    return [SpotItem(start + i, 0, verdict, 0.3) for i in range(n)]


def test_score_weights_strata_by_the_critics_verdicts_and_leaves_out_undecided_answers():
    items = _items("spurious", 10) + _items("relevant", 12, 100) + _items("undecided", 2, 200)
    answers = ["spurious"] * 5 + ["relevant"] * 5  # the critic's "spurious": 5 of 10 right
    answers += ["relevant"] * 9 + ["spurious"] + ["undecided"] * 2  # "relevant": 9 of 10, 2 not counted
    answers += ["spurious", "undecided"]  # the critic's "undecided": wrong where the expert decided
    r = score(items, answers, {"spurious": 100, "relevant": 880, "undecided": 20})
    sp, rel, und = r.strata["spurious"], r.strata["relevant"], r.strata["undecided"]
    assert (sp.counted, sp.agreed, sp.accuracy) == (10, 5, 0.5)
    assert (rel.counted, rel.agreed, rel.expert_undecided, rel.accuracy) == (10, 9, 2, 0.9)
    assert (und.counted, und.agreed, und.expert_undecided, und.accuracy) == (1, 0, 1, 0.0)
    assert sp.interval == pytest.approx(wilson_interval(5, 10))
    assert (r.n_counted, r.n_agreed, r.n_expert_undecided, r.n_answered) == (21, 14, 3, 24)
    assert r.accuracy == pytest.approx(0.1 * 0.5 + 0.88 * 0.9 + 0.02 * 0.0)
    n_eff = 1 / (0.1**2 / 10 + 0.88**2 / 10 + 0.02**2 / 1)
    assert r.n_effective == pytest.approx(n_eff)
    assert r.interval == pytest.approx(wilson_interval(r.accuracy * n_eff, n_eff))
    # a proportional sample: the plain share and the plain Wilson interval of k in n
    items = _items("spurious", 10) + _items("relevant", 30, 100)
    answers = ["spurious"] * 8 + ["relevant"] * 2 + ["relevant"] * 27 + ["spurious"] * 3
    r = score(items, answers, {"spurious": 100, "relevant": 300})
    assert r.accuracy == pytest.approx(35 / 40) and r.n_effective == pytest.approx(40)
    assert r.interval == pytest.approx(wilson_interval(35, 40))
    # unanswered items (quit early) count nowhere
    r = score(items, answers[:4])
    assert (r.n_drawn, r.n_answered, r.n_counted) == (40, 4, 4)
    with pytest.raises(ValueError, match="Unknown answer"):
        score(items, ["maybe"])
    with pytest.raises(ValueError, match="41 answers for 40"):
        score(items, ["relevant"] * 41)


# -- what it means ----------------------------------------------------------------------------------------
def test_the_benchmark_points_are_the_figures_in_docs_benchmarks():
    """resources/benchmarks/verdict_accuracy_gap.json holds what docs/benchmarks.md's issue 18 tables say."""
    doc = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    data = json.loads((ROOT / "resources" / "benchmarks" / "verdict_accuracy_gap.json").read_text("utf-8"))
    assert data["commands"][0] in doc and "c3215e7" in data["measured_with"]
    points = benchmark_points()
    assert points.source == "benchmark" and set(points.sets) == {"decoymnist", "isic-like", "elpv-tags"}
    for name, pts in points.sets.items():
        block = doc.split(f"## {name} (seeds [0, 1, 2, 3, 4]; ")[1].split("time per seed")[0]
        measured = re.search(r"measured verdict accuracy of the simulated critics: (.*)", block).group(1)
        acc = dict(re.findall(r"(\d\.\d\d) -> (\d\.\d+)", measured))
        want = []
        for nominal, got in acc.items():
            rec = re.search(
                rf"sim@{nominal} \+check\s+recovers (-?\d+)% of the gap on the mean", block
            ).group(1)
            want.append((float(got), int(rec) / 100))
        assert sorted(want) == pts


def test_gap_share_interpolates_between_measured_points():
    pts = MeasuredPoints(
        "benchmark", "two points", {"a": [(0.4, -0.3), (0.9, 1.0)], "b": [(0.4, 0.1), (1.0, 1.0)]}
    )
    assert interpolate(pts.sets["a"], 0.65) == (pytest.approx(0.35), "")
    assert interpolate(pts.sets["a"], 0.2) == (-0.3, "below")
    assert interpolate(pts.sets["a"], 0.95) == (1.0, "above")
    g = gap_share(0.65, interval=(0.5, 0.8), points=pts)
    assert g.per_set["a"]["share"] == pytest.approx(0.35) and g.per_set["b"]["share"] == pytest.approx(0.475)
    assert g.share_range == pytest.approx((0.35, 0.475))
    assert g.interval_range == pytest.approx((-0.3 + 0.1 / 0.5 * 1.3, -0.3 + 0.4 / 0.5 * 1.3))  # both from a
    assert "recovered 35% to 48%" in g.sentence() and "over the interval, -4% to 74%" in g.sentence()
    low = gap_share(0.3, interval=(0.1, 0.5), points=pts)
    assert "below the lowest accuracy measured, 0.40" in low.sentence()
    # the built-in figures at the paper's GPT-4o accuracy: a range over the three sets, not one number
    g = gap_share(0.87, interval=(0.81, 0.92))
    decoy = 0.95 + (0.87 - 0.867) / (1.0 - 0.867) * 0.08
    isic = 0.97 + (0.87 - 0.864) / (1.0 - 0.864) * 0.02
    assert g.per_set["decoymnist"]["share"] == pytest.approx(decoy)
    assert g.per_set["isic-like"]["share"] == pytest.approx(isic)
    assert g.per_set["elpv-tags"]["share"] == pytest.approx(1.08)
    assert g.share_range == pytest.approx((decoy, 1.08))
    assert g.source == "benchmark" and "docs/benchmarks.md" in g.sentence() and "c3215e7" in g.sentence()


# -- on a project -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def explained(tmp_path_factory) -> Path:
    """A small demo (160 train / 40 test images, 32 px) with a trained model, an 80-image alignment set and
    its explanation; not critiqued yet."""
    root = create_demo_project(tmp_path_factory.mktemp("spot") / "demo", n_train=160, n_test=40, size=32)
    with Project.open(root) as p:
        mid = train_original(p, "small_cnn", TrainSettings(epochs=1), CPU)
        sid = sample_alignment_set(p, mid, SamplingSettings(n=80), CPU)
        explain_alignment_set(p, mid, sid, ExplainSettings(n_background=4), SegmentSettings(), CPU)
    return root


@pytest.fixture
def critiqued(tmp_path, explained) -> Path:
    root = tmp_path / "demo"
    shutil.copytree(explained, root)
    with Project.open(root) as p:
        run_critique(p, p.latest_id("explanations"), GroundTruthCritic(error_rate=0.13, seed=0))
    return root


def test_no_critique_yet_is_refused_in_words(tmp_path, explained):
    root = tmp_path / "demo"
    shutil.copytree(explained, root)
    with Project.open(root) as p:
        with pytest.raises(ProjectError, match="has no critique yet"):
            draw_sample(p, p.latest_id("explanations"))


def test_the_draw_is_stratified_reproducible_and_leaves_out_the_experts_segments(critiqued):
    with Project.open(critiqued) as p:
        eid = p.latest_id("explanations")
        _, t = p.explanation(eid)
        ids = t["sample_ids"].tolist()
        # the expert's own word on two segments: those are no longer the critic's to check
        taken = [(ids[0], 0), (ids[1], 1)]
        for sid, seg in taken:
            p.set_expert_verdict(eid, sid, seg, "relevant")
        pop = critic_population(p, eid)
        keys = {(i.sample_id, i.segment) for v in pop.values() for i in v}
        assert not keys & set(taken)
        evidence = {(sid, s): float(t["evidence"][k, s]) for k, sid in enumerate(ids) for s in range(4)}
        assert all(evidence[k] >= 0.01 for k in keys)
        assert len(keys) == sum(e >= 0.01 for e in evidence.values()) - sum(
            evidence[k] >= 0.01 for k in taken
        )
        counts = {k: len(v) for k, v in pop.items()}
        assert counts["spurious"] > 0 and counts["relevant"] > counts["spurious"] and counts["undecided"] == 0

        items = draw_sample(p, eid, n=40, seed=5)
        assert len(items) == 40 and items.seed == 5 and items.population == counts
        got = {v: sum(i.critic_verdict == v for i in items) for v in ("spurious", "relevant")}
        assert got == {k: v for k, v in allocate(counts, 40).items() if k != "undecided"}
        assert len({(i.sample_id, i.segment) for i in items}) == 40  # no segment twice
        verdicts = [i.critic_verdict for i in items]
        assert verdicts != sorted(verdicts) and verdicts != sorted(verdicts, reverse=True)  # shuffled
        critic = {
            (r["sample_id"], r["segment"]): r["verdict"]
            for r in p.db.execute("SELECT * FROM verdicts WHERE explanation_id=? AND source='critic'", (eid,))
        }
        assert all(critic[(i.sample_id, i.segment)] == i.critic_verdict for i in items)
        assert [i.key() for i in draw_sample(p, eid, n=40, seed=5)] == [i.key() for i in items]
        assert [i.key() for i in draw_sample(p, eid, n=40, seed=6)] != [i.key() for i in items]
        fresh = draw_sample(p, eid, n=10)
        assert isinstance(fresh.seed, int)  # drawn, and kept to be stored
        assert [i.key() for i in draw_sample(p, eid, n=10, seed=fresh.seed)] == [i.key() for i in fresh]
        assert len(draw_sample(p, eid, n=10_000, seed=1)) == sum(counts.values())


def test_saving_stores_the_run_the_experts_verdicts_and_the_audit_hashes(critiqued):
    with Project.open(critiqued) as p:
        eid = p.latest_id("explanations")
        items = draw_sample(p, eid, n=30, seed=2)
        answers = ground_truth_answers(p, eid, items)
        answers[3] = "undecided"
        answers = answers[:25]  # the expert stopped after 25
        result = score(items, answers)
        wrong = score(items, ["relevant"] * 25)
        runs_before = p.db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        with pytest.raises(ValueError, match="not the score of these answers"):
            save_spot_check(p, eid, items, answers, wrong)
        assert p.db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == runs_before
        run_id = save_spot_check(p, eid, items, answers, result, expert="simulated (test)")
        row = p.get_run(run_id)
        assert row["kind"] == SPOT_CHECK and row["status"] == "finished"
        settings, results = json.loads(row["settings"]), json.loads(row["results"])
        assert settings["seed"] == 2 and settings["expert"] == "simulated (test)"
        assert [SpotItem(**d).key() for d in settings["sample"]] == [i.key() for i in items]
        assert results["answers"] == answers and results["accuracy"] == pytest.approx(result.accuracy)
        assert "worst-group-accuracy gap" in results["meaning"]["sentence"]
        experts = p.expert_verdicts(eid)
        for item, a in zip(items, answers):
            if a == "undecided":
                assert item.segment not in experts.get(item.sample_id, {})
            else:
                assert experts[item.sample_id][item.segment] == a
        assert results["expert_verdicts_written"] == 24
        assert not any(i.segment in experts.get(i.sample_id, {}) for i in items[25:])  # not answered
        entry = [e for e in audit.entries(p.db) if e["action"] == SPOT_CHECK][-1]
        assert entry["params"]["run_id"] == run_id and entry["params"]["n_answered"] == 25
        assert entry["hashes"]["sample"] == audit.json_hash([i.key() for i in items])
        assert entry["hashes"]["answers"] == audit.json_hash(answers)
        assert audit.verify_project(p).ok and verify_content(p, images=False).ok
        stored = latest_spot_check(p, eid)
        assert stored["proven"] and stored["run_id"] == run_id and stored["audit_entry"] == entry["id"]
        assert stored["result"].to_dict() == result.to_dict()
        # an answer changed afterwards in the table: not proven any more, and the content check names it
        results["answers"][0] = "spurious" if answers[0] == "relevant" else "relevant"
        p.db.execute("UPDATE runs SET results=? WHERE id=?", (json.dumps(results), run_id))
        assert not latest_spot_check(p, eid)["proven"]
        problems = [x for c in verify_content(p, images=False).checks for x in c.problems]
        assert f"run {run_id} (spot_check): its results were changed" in problems


def test_the_spot_check_meaning_uses_the_projects_own_qualification(critiqued):
    with Project.open(critiqued) as p:
        assert measured_points(p).source == "benchmark"
        qualified = {
            "rows": {},
            "verdict_accuracy": {"1.00": 1.0, "0.87": 0.86, "0.42": 0.4},
            "recovered": {sim_row(1.0): 1.0, sim_row(0.87): 0.9, sim_row(0.42): -0.2},
        }
        with p.run("qualify", {"test": "a qualification's figures"}) as run:
            run.results = qualified
        g = gap_share(0.63, p, (0.5, 0.8))
        assert g.source == "project" and "this project's own qualification" in g.description
        assert g.per_set == {
            "this project": {
                "share": pytest.approx(-0.2 + 0.23 / 0.46 * 1.1),
                "outside": "",
                "low": pytest.approx(-0.2 + 0.1 / 0.46 * 1.1),
                "high": pytest.approx(-0.2 + 0.4 / 0.46 * 1.1),
            }
        }
        no_gap = {**qualified, "recovered": dict.fromkeys(qualified["recovered"])}
        with p.run("qualify", {"test": "no gap"}) as run:
            run.results = no_gap
        points = measured_points(p)
        assert points.source == "benchmark" and "measured no gap" in points.note


def test_the_picture_outlines_one_segment_and_dims_the_rest():
    image = torch.rand(3, 8, 8)
    segments = torch.zeros(8, 8, dtype=torch.long)
    segments[2:5, 3:7] = 2
    pic = np.asarray(segment_picture(image, segments, 2, min_side=32, gap=4))
    k = 4
    assert pic.shape == (32, 2 * 32 + 4, 3)
    plain = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8).repeat(k, 0).repeat(k, 1)
    assert np.array_equal(pic[:, :32], plain)  # the image as it is
    right = pic[:, 36:].astype(int)
    inside = right[3 * k + 2 : 4 * k + 2, 4 * k + 2 : 6 * k - 2]  # well inside the segment: unchanged
    assert np.array_equal(inside, plain[3 * k + 2 : 4 * k + 2, 4 * k + 2 : 6 * k - 2])
    outside = right[6 * k :, :]  # below the segment: dimmed
    assert (outside <= plain[6 * k :, :].astype(int) * 0.35 + 21).all()
    assert tuple(right[2 * k, 4 * k]) == MASK_COLOUR  # the segment's top left corner is outlined
    assert (pic[:, 32:36] == 255).all()


def test_the_report_shows_the_spot_check(critiqued, tmp_path):
    with Project.open(critiqued) as p:
        eid = p.latest_id("explanations")
        items = draw_sample(p, eid, n=40, seed=3)
        answers = ground_truth_answers(p, eid, items)
        result = score(items, answers)
        run_id = save_spot_check(p, eid, items, answers, result)
    with Project.open(critiqued, read_only=True) as p:
        report = gather_report(p, CPU)
    sc = report["spot_check"]
    assert sc["run_id"] == run_id and sc["proven"] and sc["n_drawn"] == 40
    page = render_html(report)
    text = " ".join(
        html.unescape(re.sub(r"<[^>]+>", " ", re.sub(r"<style.*?</style>", " ", page, flags=re.S))).split()
    )
    lo, hi = result.interval
    assert "Critic spot-check" in text and f"Run {run_id} ·" in text
    assert f"Verdict accuracy {result.accuracy:.3f} (95% Wilson interval {lo:.2f} to {hi:.2f})" in text
    for v in ("spurious", "relevant"):
        st = result.strata[v]
        iv = f"{st.interval[0]:.2f} to {st.interval[1]:.2f}"
        assert f"{v} {st.population} {st.drawn} {st.counted} {st.agreed} {st.accuracy:.3f} {iv}" in text
    assert "What it means: At verdict accuracy" in text and "built-in benchmark figures" in text
    assert f"hashes match audit entry {sc['audit_entry']}" in text and "Which verdict error hurts" in text
    assert (
        f"verdict accuracy {result.accuracy:.2f} (95% Wilson interval {lo:.2f} to {hi:.2f}), 40 of 40" in text
    )
    # the PDF, with the core fonts (text kept as it is written), holds the same section
    pdf = write_pdf(report, tmp_path / "r.pdf", unicode_fonts=False).read_bytes()
    streams = b""
    for m in re.finditer(rb"stream\r?\n", pdf):
        d = zlib.decompressobj()
        try:
            streams += d.decompress(pdf[m.end() :])
        except zlib.error:  # not a compressed stream (a picture)
            continue
    assert b"(Critic spot-check)" in streams
    shown = f"{result.accuracy:.3f} (95% Wilson interval {lo:.2f} to {hi:.2f})"
    assert shown.replace("(", "\\(").replace(")", "\\)").encode() in streams  # escaped in PDF strings
