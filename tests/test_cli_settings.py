"""The command line starts from the settings saved for the project (the window's), then --settings FILE,
then --set NAME=VALUE, then its own flags (--arch, --seed); it prints where each non-default came from and
refuses unknown names and values out of bounds in words, without a traceback."""

from __future__ import annotations

import json
import subprocess
import sys

from lvlmva_desktop.cli import build_parser, main
from lvlmva_desktop.cli.common import pipeline_settings
from lvlmva_desktop.core.method.settings_schema import SETTINGS_FILE


def _window_saved(root, **sections) -> None:
    root.mkdir(exist_ok=True)
    (root / SETTINGS_FILE).write_text(json.dumps({"pipeline": sections}), encoding="utf-8")


def test_settings_prints_what_a_command_would_use_and_where_each_came_from(tmp_path, capsys):
    proj = tmp_path / "proj"
    align = {"lambda": 2.0, "penalty": "counterfactual", "epochs": 3, "lr": 0.01}  # as today's window saves
    _window_saved(proj, align=align, train={"epochs": 4})
    given = tmp_path / "given.json"
    given.write_text(json.dumps({"align": {"epochs": 6, "lr": 0.02}}), encoding="utf-8")
    assert main(["settings", str(proj), "--settings", str(given), "--set", "align.lr=0.05"]) == 0
    got = capsys.readouterr()
    used = json.loads(got.out)
    assert used["align"]["lambda"] == 2.0 and used["train"]["epochs"] == 4  # the window's
    assert used["align"]["epochs"] == 6  # --settings wins over the window
    assert used["align"]["lr"] == 0.05  # --set wins over --settings
    assert got.err.splitlines() == [
        "setting train.epochs = 4 (from window)",
        "setting align.lambda = 2 (from window)",
        f"setting align.epochs = 6 (from --settings {given})",
        "setting align.lr = 0.05 (from --set)",
    ]
    assert main(["settings"]) == 0  # no project: the defaults, nothing to tell
    got = capsys.readouterr()
    assert json.loads(got.out)["align"]["lambda"] == "auto" and got.err == ""


def test_the_commands_flags_win_over_set_and_the_window(tmp_path, capsys):
    proj = tmp_path / "proj"
    _window_saved(proj, arch="resnet18", train={"seed": 1, "epochs": 2})
    args = build_parser().parse_args(
        [
            "train",
            str(proj),
            "--set",
            "train.seed=5",
            "--set",
            "arch=mlp",
            "--seed",
            "9",
            "--arch",
            "small_cnn",
        ]
    )
    s = pipeline_settings(args)
    out = capsys.readouterr().out
    assert s.arch == "small_cnn" and s.train.seed == 9 and s.align.seed == 9 and s.train.epochs == 2
    assert "setting train.seed = 9 (from --seed)" in out and "setting train.epochs = 2 (from window)" in out
    assert "arch" not in out  # --arch put it back to its default: nothing to tell
    args = build_parser().parse_args(["train", str(proj), "--set", "train.seed=5"])
    assert pipeline_settings(args, tell=None).arch == "resnet18"  # the window's, nobody said otherwise


def test_verdict_marks_held_back_verdicts_with_the_windows_align_settings(tmp_path, capsys):
    """`verdict` has its own --set (the verdict); its consistency check takes the project's settings."""
    proj = tmp_path / "proj"
    _window_saved(proj, align={"consistency_min_spurious": 1})
    args = build_parser().parse_args(["verdict", str(proj)])
    assert args.set is None
    given = type(args)(project=args.project, settings=args.settings)
    assert pipeline_settings(given, tell=None).align.consistency_min_spurious == 1


def test_unknown_names_and_bad_values_are_refused_in_words(tmp_path, capsys):
    proj = tmp_path / "proj"
    _window_saved(proj)
    assert main(["settings", str(proj), "--set", "align.lamda=2"]) == 2
    err = capsys.readouterr().err
    assert "Unknown setting 'align.lamda'. Did you mean align.lambda" in err
    assert "Known settings: arch, train.epochs" in err and "Traceback" not in err
    assert main(["settings", str(proj), "--set", "train.epochs=0"]) == 2
    assert "--set: train.epochs must be from 1 to 1000 epochs, got '0'" in capsys.readouterr().err
    assert main(["settings", str(proj), "--set", "train.epochs"]) == 2
    assert "--set expects NAME=VALUE" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"align": {"ratio": 0.5}}), encoding="utf-8")
    assert main(["settings", str(proj), "--settings", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"--settings {bad}: Unknown setting 'align.ratio'. Did you mean align.align_ratio" in err
    bad.write_text("{", encoding="utf-8")
    assert main(["settings", "--settings", str(bad)]) == 2
    assert "is not JSON" in capsys.readouterr().err
    assert main(["settings", "--settings", str(tmp_path / "missing.json")]) == 2
    assert "Cannot read the settings file" in capsys.readouterr().err


def test_a_refused_setting_stops_a_command_before_it_opens_the_project(tmp_path):
    """As the user runs it: a message on stderr, exit status 2, no traceback."""
    proj = tmp_path / "proj"
    _window_saved(proj)
    got = subprocess.run(
        [sys.executable, "-m", "lvlmva_desktop.cli", "align", str(proj), "--set", "align.lambda=-1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert got.returncode == 2, got.stderr
    assert "align.lambda must be 'auto' or a number" in got.stderr and "Traceback" not in got.stderr


def test_settings_list_names_every_setting_with_its_default_bounds_and_help(capsys):
    assert main(["settings", "--list"]) == 0
    out = capsys.readouterr().out
    assert "align.lambda (float; default auto; 'auto' or a number (from 0 to 1e+06))" in out
    assert "train.epochs (int [epochs]; default 8 epochs; from 1 to 1000 epochs)" in out
    assert "How strongly retraining enforces the penalty" in out
