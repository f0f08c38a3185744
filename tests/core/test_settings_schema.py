"""The settings schema (core/method/settings_schema.py): one entry per setting of the dataclasses, with one name,
the dataclass's default, bounds, unit and help; old names read from saved files and recorded runs; the
settings saved for a project read by the core; bad names and values refused in words."""

from __future__ import annotations

import dataclasses
import json

import pytest

from lvlmva_desktop.core.method import settings_schema as schema
from lvlmva_desktop.core.method.settings import AlignSettings, PipelineSettings
from lvlmva_desktop.core.method.settings_schema import SETTINGS_FILE, SettingError


def test_every_field_of_the_dataclasses_has_one_entry_with_its_default():
    assert schema.check_dataclasses() == []
    assert len(schema.names()) == len(set(schema.names()))
    defaults = PipelineSettings()
    for s in schema.SETTINGS:
        assert s.default == s.get(defaults), s.name  # the dataclass is the one source of the default
        assert len(s.help) > 20 and s.label, s.name
        assert s.coerce(s.default) == s.default, s.name  # every default is inside its own bounds
        if s.kind in ("int", "float", "log"):
            assert s.lo is not None and s.hi is not None and s.lo <= s.default <= s.hi, s.name
        if s.kind in ("choice", "bool"):
            assert s.default in dict(s.choices), s.name
    assert schema.setting("align.lambda").default == "auto"
    assert schema.setting("train.epochs").unit == "epochs" and schema.setting("train.epochs").type is int
    # a dataclass default changed is the schema's default at once
    assert schema.setting("align.epochs").default == AlignSettings().epochs


def test_old_names_are_read_as_the_one_name():
    assert schema.canonical_name("align.lambda_") == "align.lambda"
    assert schema.canonical_name("align.λ") == "align.lambda"
    assert schema.canonical_name("align.lambda") == "align.lambda"
    assert schema.canonical_name("align.nope") is None
    s, sources = PipelineSettings(), {}
    schema.apply(s, sources, {"align.λ": 3, "align.lambda_": 4}, "--settings f.json")
    assert s.align.lambda_ == 4.0 and sources == {"align.lambda": "--settings f.json"}


@pytest.mark.parametrize("key", ["lambda", "lambda_", "λ"])
def test_a_saved_file_of_an_older_window_is_read(tmp_path, key):
    (tmp_path / SETTINGS_FILE).write_text(
        json.dumps({"pipeline": {"arch": "mlp", "align": {key: 7.0, "penalty": "gradient", "epochs": 2}}}),
        encoding="utf-8",
    )
    s, sources = schema.project_settings(tmp_path)
    assert s.align.lambda_ == 7.0 and s.align.penalty == "gradient" and s.arch == "mlp"
    assert sources == {"arch": "window", "align.lambda": "window", "align.penalty": "window",
                       "align.epochs": "window"}  # fmt: skip


def test_a_file_from_before_the_penalty_could_choose_its_strength_is_upgraded(tmp_path):
    """No align.penalty: λ = 1 was the old default (nobody's choice) and becomes "auto"; another λ was
    calibrated for the input-gradient penalty and keeps it (settings.upgrade_saved)."""
    path = tmp_path / SETTINGS_FILE
    path.write_text(json.dumps({"pipeline": {"align": {"lambda": 1.0}}}), encoding="utf-8")
    s, sources = schema.project_settings(tmp_path)
    assert s.align.strength_is_auto() and s.align.penalty == "counterfactual" and sources == {}
    path.write_text(json.dumps({"pipeline": {"align": {"lambda": 50.0}}}), encoding="utf-8")
    s, _ = schema.project_settings(tmp_path)
    assert s.align.lambda_ == 50.0 and s.align.penalty == "gradient"


def test_a_saved_file_with_unknown_or_bad_values_keeps_the_rest(tmp_path):
    (tmp_path / SETTINGS_FILE).write_text(
        json.dumps({"pipeline": {"train": {"epochs": 3, "gone": 1}, "sampling": {"n": -5}}}), encoding="utf-8"
    )
    s, sources = schema.project_settings(tmp_path)
    assert s.train.epochs == 3 and s.sampling.n == PipelineSettings().sampling.n
    assert sources == {"train.epochs": "window"}
    (tmp_path / SETTINGS_FILE).write_text("{not json", encoding="utf-8")
    assert schema.project_settings(tmp_path) == (PipelineSettings(), {})


def test_saved_settings_round_trip_under_the_one_name(tmp_path):
    s = PipelineSettings()
    s.align.lambda_ = 2.5
    s.train.epochs = 3
    written = schema.save_project_settings(tmp_path, s)
    assert written["align"]["lambda"] == 2.5 and "lambda_" not in written["align"]
    assert json.loads((tmp_path / SETTINGS_FILE).read_text())["pipeline"] == written
    again, sources = schema.project_settings(tmp_path)
    assert again == s and sources == {"align.lambda": "window", "train.epochs": "window"}
    assert not list(tmp_path.glob("*.tmp"))


def test_a_recorded_run_of_an_older_program_reads_its_lambda():
    recorded = {"arch": "small_cnn", "align": {"lambda_": 10.0, "epochs": 2}}
    s = PipelineSettings.from_record(recorded)
    assert s.align.lambda_ == 10.0 and s.align.penalty == "gradient"  # LEGACY_VALUES: the old penalty


def test_unknown_names_are_refused_with_the_close_ones_and_all_names():
    with pytest.raises(SettingError) as e:
        schema.setting("align.lamda")
    assert "Did you mean align.lambda" in str(e.value) and "train.epochs" in str(e.value)
    with pytest.raises(SettingError) as e:
        schema.setting("epochs")
    assert "Known settings: arch, train.epochs" in str(e.value)


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("train.epochs", "0", "train.epochs must be from 1 to 1000 epochs, got '0'"),
        ("train.epochs", "2.5", "train.epochs must be from 1 to 1000"),
        ("align.align_ratio", 1.5, "align.align_ratio must be from 0.01 to 0.95"),
        ("align.lambda", "-1", "align.lambda must be 'auto' or a number"),
        ("align.lambda", "strong", "lambda must be 'auto' or a number"),
        ("align.consistency_check", "maybe", "align.consistency_check must be true or false"),
        ("explain.background", "mean", "Unknown reference images 'mean'; choose one of"),
        ("train.lr", "nan", "train.lr must be from 1e-06 to 1"),
    ],
)
def test_values_out_of_bounds_are_refused_in_words(name, value, words):
    with pytest.raises(SettingError) as e:
        schema.setting(name).coerce(value)
    assert words in str(e.value)


def test_text_from_a_command_line_is_read_as_the_settings_type():
    assert schema.setting("train.epochs").coerce("3") == 3
    assert schema.setting("train.lr").coerce("1e-4") == 1e-4
    assert schema.setting("align.lambda").coerce(" Auto ") == "auto"
    assert schema.setting("align.consistency_check").coerce("off") is False
    assert schema.setting("arch").coerce("mlp") == "mlp"


def test_resolve_takes_window_then_file_then_set_then_flags(tmp_path):
    (tmp_path / SETTINGS_FILE).write_text(
        json.dumps({"pipeline": {"train": {"epochs": 2, "lr": 0.01, "batch_size": 8, "seed": 1}}}),
        encoding="utf-8",
    )
    given = tmp_path / "given.json"
    given.write_text(json.dumps({"train": {"lr": 0.02, "batch_size": 16, "seed": 2}}), encoding="utf-8")
    s, sources = schema.resolve(
        tmp_path, given, ["train.batch_size=32", "train.seed=3"], {"train.seed": (4, "--seed")}
    )
    assert (s.train.epochs, s.train.lr, s.train.batch_size, s.train.seed) == (2, 0.02, 32, 4)
    assert sources == {"train.epochs": "window", "train.lr": f"--settings {given}",
                       "train.batch_size": "--set", "train.seed": "--seed"}  # fmt: skip
    lines = schema.describe_sources(s, sources)
    assert lines == [
        "setting train.epochs = 2 (from window)",
        "setting train.lr = 0.02 (from --settings " + str(given) + ")",
        "setting train.batch_size = 32 (from --set)",
        "setting train.seed = 4 (from --seed)",
    ]
    # a value set back to its default is not a non-default any more
    s, sources = schema.resolve(tmp_path, None, ["train.epochs=8"])
    assert "train.epochs" not in sources


def test_every_setting_is_a_field_the_dataclass_has():
    for s in schema.SETTINGS:
        if s.attr is not None:
            klass = schema.SECTIONS[s.section]
            assert s.attr in {f.name for f in dataclasses.fields(klass)}, s.name


def test_a_project_written_by_an_older_program_reads_its_recorded_settings_under_the_one_name(tmp_path):
    """tests/fixtures/main-project.zip (written at commit d36aa26): no saved settings (the defaults, no
    source to tell), and the settings its runs recorded read back through the schema's names."""
    import zipfile
    from pathlib import Path

    from lvlmva_desktop.core.store.project import Project

    with zipfile.ZipFile(Path(__file__).resolve().parents[1] / "fixtures" / "main-project.zip") as z:
        z.extractall(tmp_path)
    root = tmp_path / "main-project"
    assert schema.project_settings(root) == (PipelineSettings(), {})
    with Project.open(root, read_only=True) as p:
        recorded = [json.loads(r[0]) for r in p.db.execute("SELECT settings FROM runs")]
    names = [
        name
        for run in recorded
        for name in schema.flatten({k: v for k, v in run.items() if k in schema.SECTIONS or k == "arch"})
    ]
    assert len(names) >= 20  # train, sample and explain recorded their sections
    for name in names:
        assert schema.canonical_name(name) is not None, name  # every recorded name is a setting's
