"""The command line twin: every step as a command, clear errors, a usable project from bad rows."""

import json

import numpy as np
from PIL import Image

from lvlmva_desktop.cli import main

FAST = [
    "--set",
    "train.epochs=1",
    "--set",
    "align.epochs=1",
    "--set",
    "sampling.n=8",
    "--set",
    "evaluate.n_attribution_images=4",
    "--set",
    "evaluate.min_group_size=1",
]


def _generate(data, n_train: int = 48, n_test: int = 24) -> None:
    """A tiny ISIC-like set (48 train / 24 test images at 32 px unless told) through the CLI."""
    args = ["generate", "isic-like", str(data), "--quiet"]
    for p in (f"n_train={n_train}", f"n_test={n_test}", "size=32"):
        args += ["--param", p]
    assert main(args) == 0


def explained_cli_project(root, fast: list[str], n_train: int = 48, n_test: int = 24):
    """A generated set imported, described, trained, sampled and explained through the CLI: root/proj."""
    data, proj = root / "data", root / "proj"
    _generate(data, n_train, n_test)
    assert (
        main(["import", str(proj), "--csv", str(data / "manifest.csv"), "--quiet", "--image-size", "32"]) == 0
    )
    assert main(["describe", str(proj), "--defaults", "isic-like"]) == 0
    for step in ("train", "sample", "explain"):
        assert main([step, str(proj), "--quiet", "--device", "cpu", *fast]) == 0
    return proj


def test_every_step_from_the_command_line(tmp_path, capsys):
    data, proj = tmp_path / "data", tmp_path / "proj"
    _generate(data)
    assert (
        main(["import", str(proj), "--csv", str(data / "manifest.csv"), "--quiet", "--image-size", "32"]) == 0
    )
    assert main(["describe", str(proj), "--defaults", "isic-like"]) == 0
    assert main(["train", str(proj), "--quiet", "--device", "cpu", *FAST]) == 0
    assert main(["sample", str(proj), "--quiet", *FAST]) == 0
    capsys.readouterr()
    assert main(["explain", str(proj), "--quiet", *FAST, "--set", "explain.background=mean"]) == 2
    assert (
        "Unknown reference images 'mean'; choose one of ('median', 'train', 'black')"
        in capsys.readouterr().err
    )
    assert main(["explain", str(proj), "--quiet", *FAST, "--set", "segment.evidence=negative"]) == 2
    assert "Unknown evidence kind 'negative'" in capsys.readouterr().err
    assert main(["explain", str(proj), "--quiet", *FAST]) == 0
    assert (
        main(["critique", str(proj), "--quiet", "--critic", "simulated", "--verdict-accuracy", "0.87"]) == 0
    )
    out = capsys.readouterr().out
    assert "simulated-critic" in out and "benchmark only" in out
    assert (
        main(["verdict", str(proj), "--sample", "1", "--segment", "1", "--set", "relevant"]) == 2
    )  # not in set
    capsys.readouterr()
    assert main(["verdict", str(proj)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    sample = int(first.split()[1].rstrip(":"))
    assert main(["verdict", str(proj), "--sample", str(sample), "--segment", "2", "--set", "spurious"]) == 0
    assert "2:spurious*" in capsys.readouterr().out
    assert main(["show", str(proj), "--sample", str(sample)]) == 0
    shown = capsys.readouterr().out
    assert (
        "Simulated critic for benchmarks" in shown
        and "segment 2: spurious" in shown
        and "(decided by expert " in shown
        and "(decided by critic)" in shown
    )
    assert main(["show", str(proj), "--sample", "99999"]) == 2
    assert main(["align", str(proj), "--quiet", *FAST]) == 0
    assert main(["evaluate", str(proj), "--quiet", "--json", str(tmp_path / "m.json"), *FAST]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert len(metrics) == 2 and all("worst_group_accuracy" in m for m in metrics.values())
    assert main(["status", str(proj)]) == 0
    status = capsys.readouterr().out
    assert "[erm]" in status and "[rrr]" in status


def test_run_writes_results_and_prints_the_table(tmp_path, capsys):
    data, proj = tmp_path / "data", tmp_path / "proj"
    _generate(data)
    main(["import", str(proj), "--csv", str(data / "manifest.csv"), "--quiet"])
    capsys.readouterr()
    assert (
        main(
            [
                "run",
                str(proj),
                "--quiet",
                "--device",
                "cpu",
                "--critic",
                "simulated",
                "--verdict-accuracy",
                "0.87",
                *FAST,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "average accuracy" in out and "worst-group accuracy" in out
    assert list((proj / "runs").glob("run-*.json"))


def test_bad_rows_give_a_report_and_a_usable_project(tmp_path, capsys):
    d = tmp_path / "d"
    d.mkdir()
    for i in range(4):
        Image.fromarray(np.full((12, 12), 60 * i, np.uint8)).save(d / f"ok{i}.png")
    (d / "empty.png").write_bytes(b"")
    (d / "cut.png").write_bytes((d / "ok1.png").read_bytes()[:40])
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(d / "small_mask.png")
    rows = [
        "path,label,split,mask",
        "ok0.png,a,train,",
        "ok1.png,b,train,",
        "ok2.png,a,test,",
        "ok3.png,b,test,",
        "missing.png,a,train,",
        "empty.png,a,train,",
        "cut.png,b,train,",
        "ok0.png,a,train,",
        "ok1.png,b,banana,",
        "ok2.png,,train,",
        "ok3.png,b,train,small_mask.png",
    ]
    (d / "m.csv").write_text("\n".join(rows) + "\n")
    assert (
        main(
            [
                "import",
                str(tmp_path / "p"),
                "--csv",
                str(d / "m.csv"),
                "--quiet",
                "--report",
                str(tmp_path / "r.json"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    for reason in ("missing", "unreadable", "truncated", "duplicate", "bad_split", "empty_label"):
        assert reason in out, reason
    report = json.loads((tmp_path / "r.json").read_text())
    assert len(report["samples"]) == 4 and len(report["skipped"]) == 7
    assert main(["status", str(tmp_path / "p")]) == 0
    assert "train: 2 images" in capsys.readouterr().out


def test_errors_are_messages_not_tracebacks(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 2
    assert "not an LVLM-VA project" in capsys.readouterr().err
    assert main(["train", str(tmp_path), "--set", "nope=1"]) == 2
    assert "Unknown setting" in capsys.readouterr().err


def test_the_desktop_program_runs_the_command_line_with_cli(tmp_path, capsys):
    """`lvlmva-desktop --cli ARGS` is `lvlmva ARGS` (the packaged program has no separate executable)."""
    from lvlmva_desktop.app import main as desktop_main

    assert desktop_main(["--cli", "settings"]) == 0
    assert json.loads(capsys.readouterr().out)["train"]["epochs"] > 0
    assert desktop_main(["--cli", "audit", str(tmp_path), "--verify"]) != 0  # a message, not a traceback
    assert "not an LVLM-VA project" in capsys.readouterr().err


def _project_with_verdicts(tmp_path, capsys, accuracy="0.6", n="16"):
    data, proj = tmp_path / "data", tmp_path / "proj"
    _generate(data)
    assert (
        main(["import", str(proj), "--csv", str(data / "manifest.csv"), "--quiet", "--image-size", "32"]) == 0
    )
    imported = capsys.readouterr().out
    small = [*FAST, "--set", f"sampling.n={n}"]
    assert main(["train", str(proj), "--quiet", "--device", "cpu", *small]) == 0
    assert main(["sample", str(proj), "--quiet", *small]) == 0
    assert main(["explain", str(proj), "--quiet", *small]) == 0
    assert (
        main(["critique", str(proj), "--quiet", "--critic", "simulated", "--verdict-accuracy", accuracy]) == 0
    )
    capsys.readouterr()
    return proj, imported


def test_import_prints_the_class_by_group_table(tmp_path, capsys):
    _, imported = _project_with_verdicts(tmp_path, capsys)
    assert "train: images per class and group (share of the class)" in imported
    benign = next(line for line in imported.splitlines() if line.strip().startswith("benign"))
    # 19 of the 24 benign training images carry the patch (80%, the generator's default), no malignant one
    assert "5 ( 21%)" in benign and "19 ( 79%)" in benign
    malignant = next(line for line in imported.splitlines() if line.strip().startswith("malignant"))
    assert "(100%)" in malignant and "(  0%)" in malignant


def test_critique_needs_a_critic_and_seed_reaches_the_simulated_one(tmp_path, capsys):
    proj, _ = _project_with_verdicts(tmp_path, capsys)
    assert main(["critique", str(proj), "--quiet"]) == 2
    assert "Choose the critic with --critic" in capsys.readouterr().err
    assert main(["critique", str(proj), "--quiet", "--critic", "simulated", "--verdict-accuracy", "1.5"]) == 2
    assert "between 0 and 1" in capsys.readouterr().err
    from lvlmva_desktop.core.store.project import Project

    with Project.open(proj, read_only=True) as p:
        before = p.db.execute("SELECT COUNT(*) FROM runs WHERE kind='critique'").fetchone()[0]
    assert main(["run", str(proj), "--quiet", "--device", "cpu", "--seed", "7", *FAST]) == 2  # no critic
    assert "--critic" in capsys.readouterr().err
    assert main(["critique", str(proj), "--quiet", "--critic", "simulated", "--verdict-accuracy", "0.5"]) == 0
    with Project.open(proj, read_only=True) as p:
        seeds = [
            json.loads(r["settings"])["critic"]["seed"]
            for r in p.db.execute("SELECT settings FROM runs WHERE kind='critique' ORDER BY id")
        ]
        assert len(seeds) == before + 1
    assert seeds[-1] == 0
    # `run --seed 7` uses seed 7 for the simulated critic too (not the silent --critic-seed 0)
    assert (
        main(["run", str(proj), "--quiet", "--device", "cpu", "--critic", "simulated", "--seed", "7", *FAST])
        == 0
    )
    with Project.open(proj, read_only=True) as p:
        run = p.db.execute("SELECT settings FROM runs WHERE kind='pipeline' ORDER BY id DESC").fetchone()
        assert json.loads(run["settings"])["critic"]["seed"] == 7


def test_align_prints_the_strength_the_penalty_and_the_held_back_verdicts(tmp_path, capsys):
    proj, _ = _project_with_verdicts(tmp_path, capsys)
    lenient = ["--set", "align.consistency_min_spurious=1", "--set", "align.consistency_min_reliance=0"]
    assert main(["verdict", str(proj)]) == 0
    assert "!" not in capsys.readouterr().out.split("(* =")[0]  # the default needs 20 'spurious' verdicts
    (tmp_path / "s.json").write_text(
        json.dumps({"align": {"consistency_min_spurious": 1, "consistency_min_reliance": 0}})
    )
    assert main(["verdict", str(proj), "--settings", str(tmp_path / "s.json")]) == 0
    listed = capsys.readouterr().out
    marked = [
        (int(line.split()[1].rstrip(":")), int(part.split(":")[0]))
        for line in listed.splitlines()
        if line.startswith("sample ")
        for part in line.split(":", 1)[1].split()
        if part.endswith("!")
    ]
    assert marked, listed  # at 0.6 the critic's errors include lesion segments that the check holds back
    assert "held back by the consistency check" in listed
    sample, segment = marked[0]
    assert main(["show", str(proj), "--sample", str(sample), *lenient]) == 0
    shown = capsys.readouterr().out
    line = next(x for x in shown.splitlines() if x.startswith(f"segment {segment}:"))
    assert "spurious" in line and "held back by the consistency check" in line
    assert main(["align", str(proj), "--quiet", *FAST, *lenient]) == 0
    out = capsys.readouterr().out
    assert "Aligned model version" in out
    assert f"Held back by the consistency check ({len(marked)}; image/segment): " in out
    assert f" {sample}/{segment}" in out.split("Held back by the consistency check")[1].splitlines()[0]
    assert "Penalty: strength" in out and "counterfactual penalty" in out
    assert "chosen automatically" in out and "reliance" in out
    # one name per setting, but the others it is known by are accepted
    assert main(["align", str(proj), "--quiet", *FAST, "--set", "align.lambda_=0.5"]) == 0
    out = capsys.readouterr().out
    assert "strength 0.5 (set by hand, counterfactual penalty)" in out
    assert main(["align", str(proj), "--quiet", *FAST, "--set", "align.lambda=strong"]) == 2
    assert "lambda must be 'auto' or a number" in capsys.readouterr().err


def test_evaluate_compares_the_latest_model_with_its_original(tmp_path, capsys):
    proj, _ = _project_with_verdicts(tmp_path, capsys)
    for strength in ("0.5", "auto"):  # two trials from the same original
        assert main(["align", str(proj), "--quiet", *FAST, "--set", f"align.lambda={strength}"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(proj), "--quiet", "--json", str(tmp_path / "m.json"), *FAST]) == 0
    out = capsys.readouterr().out
    assert "Evaluating model 3 against the original it was derived from (model 1)" in out
    assert sorted(json.loads((tmp_path / "m.json").read_text())) == ["1", "3"]


def test_the_simulated_critics_options_say_what_they_do(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["critique", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "1.0 = every segment judged exactly by its ground-truth artefact mask" in text
    assert "the masks are still the union of whole segments" in text
    assert "default: --seed, else 0" in text
    assert "required:" in text and "BENCHMARKS ONLY" in text
