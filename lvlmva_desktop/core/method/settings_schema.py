"""One schema for the method's settings: each setting's one name, type, default, bounds, unit and help.

The dataclasses of ``core/method/settings.py`` stay the one source of the defaults and of the types; this table adds
what a form and a command line need to offer a setting: its dotted name (``align.lambda``), the words that
explain it, its bounds or choices and its unit. The Training pane builds its form from it, the command line
checks ``--set`` and ``--settings`` against it, and both read the settings the expert saved for a project
through ``project_settings`` (the file ``gui-settings.json`` in the project folder, a name kept from the
releases in which only the window read it).

Older names are still read: ``align.lambda_`` (the Python field) and ``align.λ`` (the window's label), in
saved files and recorded runs alike (``canonical_name``).

Torch-free and Qt-free: the window builds its form from it before torch is imported.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from lvlmva_desktop.core.method.settings import (
    BACKGROUND_KINDS,
    COVARIANCE_TYPES,
    EVIDENCE_KINDS,
    METHODS,
    PENALTIES,
    STRATEGIES,
    AlignSettings,
    EvalSettings,
    ExplainSettings,
    PipelineSettings,
    SamplingSettings,
    SegmentSettings,
    TrainSettings,
    upgrade_saved,
)

#: The file in the project folder holding the settings the expert saved (the window wrote it first).
SETTINGS_FILE = "gui-settings.json"

#: The sections of PipelineSettings and their dataclasses.
SECTIONS: dict[str, type] = {
    "train": TrainSettings,
    "sampling": SamplingSettings,
    "explain": ExplainSettings,
    "segment": SegmentSettings,
    "align": AlignSettings,
    "evaluate": EvalSettings,
}

#: Where a setting's value came from, as the command line prints it.
DEFAULT, WINDOW = "default", "window"

ARCH_NAMES = {
    "mlp": "Two-layer MLP",
    "small_cnn": "Small CNN",
    "resnet18": "ResNet-18",
    "resnet50": "ResNet-50",
    "densenet121": "DenseNet-121",
    "efficientnet_b0": "EfficientNet-B0",
    "convnext_tiny": "ConvNeXt-T",
    "vit_b_16": "ViT-B/16",
}
STRATEGY_NAMES = {
    "low_entropy": "Most confident first (low entropy)",
    "random": "Random",
    "high_entropy": "Least confident first (high entropy)",
}
METHOD_NAMES = {
    "deeplift_shap": "DeepLIFT-SHAP",
    "input_x_gradient": "Input × gradient",
    "integrated_gradients": "Integrated gradients",
}
BACKGROUND_NAMES = {
    "train": "Random training images",
    "median": "The typical training image (median)",
    "black": "A black image",
}
EVIDENCE_NAMES = {"positive": "Evidence for the class", "absolute": "Evidence for and against"}
PENALTY_NAMES = {
    "counterfactual": "Counterfactual (exchange the regions)",
    "gradient": "Input gradient (the paper's)",
    "both": "Both",
}
COVARIANCE_NAMES = {"full": "Full", "diag": "Diagonal", "spherical": "Spherical"}


class SettingError(ValueError):
    """A setting's name is unknown or its value is outside what it accepts; the message says which."""


def _named(values: tuple[str, ...], names: dict[str, str]) -> tuple[tuple[Any, str], ...]:
    return tuple((v, names.get(v, v)) for v in values)


@dataclass(frozen=True)
class Setting:
    """One setting: ``name`` is its one dotted name; the default and the type come from the dataclass.

    kind: how it is edited and checked -- "int", "float", "log" (a number spanning decades), "bool",
    "choice" (one of ``choices``, pairs of value and words), "strength" ("auto" or a number), "arch" (a
    classifier: the listed choices, or any torchvision classifier)."""

    name: str
    label: str
    help: str
    kind: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[tuple[Any, str], ...] = ()
    unit: str = ""
    aliases: tuple[str, ...] = ()
    step: float | None = None  # the arrows' step of a "float" ("log" steps 1-2-5, "int" by one)
    what: str = ""  # a choice's values in words ("reference images"), for the message that refuses one

    @property
    def section(self) -> str:
        return self.name.split(".")[0]

    @property
    def attr(self) -> str | None:
        """The dataclass field (None for the top-level ``arch``)."""
        if "." not in self.name:
            return None
        key = self.name.split(".", 1)[1]
        return "lambda_" if key == "lambda" else key

    @property
    def default(self) -> Any:
        return self.get(PipelineSettings())

    @property
    def type(self) -> type:
        """The value's Python type (for "strength": float, besides the word "auto")."""
        if self.kind in ("choice", "arch"):
            return type(self.default)
        return {"int": int, "bool": bool, "strength": float}.get(self.kind, float)

    def get(self, s: PipelineSettings) -> Any:
        return getattr(s, self.section) if self.attr is None else getattr(getattr(s, self.section), self.attr)

    def set(self, s: PipelineSettings, value: Any) -> None:
        if self.attr is None:
            setattr(s, self.section, value)
        else:
            setattr(getattr(s, self.section), self.attr, value)

    def text(self, value: Any) -> str:
        """A value in words (a choice's words, a number with its unit)."""
        if self.choices and value in dict(self.choices):
            return dict(self.choices)[value]
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "on" if value else "off"
        return f"{value:g}{' ' + self.unit if self.unit else ''}"

    def bounds_text(self) -> str:
        if self.kind == "strength":
            return f"'auto' or a number (from {self.lo:g} to {self.hi:g})"
        if self.kind == "bool":
            return "true or false"
        if self.kind == "choice":
            return "one of " + ", ".join(str(v) for v, _ in self.choices)
        if self.kind == "arch":
            return (
                "one of " + ", ".join(str(v) for v, _ in self.choices) + " or another torchvision classifier"
            )
        return f"from {self.lo:g} to {self.hi:g}{' ' + self.unit if self.unit else ''}"

    def coerce(self, value: Any) -> Any:
        """The value checked and in its type (text from a command line is read as the setting's type);
        SettingError says in words what the setting accepts."""
        bad = SettingError(f"{self.name} must be {self.bounds_text()}, got {value!r}.")
        if isinstance(value, str) and self.kind not in ("choice", "arch"):
            text = value.strip()
            if self.kind == "strength" and text.lower() == "auto":
                return "auto"
            if self.kind == "bool":
                words = {"true": True, "on": True, "yes": True, "1": True}
                words |= {"false": False, "off": False, "no": False, "0": False}
                if text.lower() not in words:
                    raise bad
                return words[text.lower()]
            try:
                value = float(text)
            except ValueError:
                raise bad from None
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise bad
            return value
        if self.kind == "choice":
            if value not in dict(self.choices):
                values = tuple(v for v, _ in self.choices)
                raise SettingError(
                    f"Unknown {self.what or 'value of ' + self.name} {value!r}; choose one of {values} "
                    f"({self.name})."
                )
            return value
        if self.kind == "arch":
            if not isinstance(value, str):
                raise bad
            if value not in dict(self.choices):
                from lvlmva_desktop.core.method.architectures import (
                    check_architecture,  # torch: only for a name not listed
                )

                value = check_architecture(value)
            return value
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise bad
        if self.kind == "int":
            if value != int(value):
                raise bad
            value = int(value)
        else:
            value = float(value)
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise bad
        return value


# fmt: off
SETTINGS: tuple[Setting, ...] = (
    # -- the original model (ERM) ----------------------------------------------------------------------
    Setting("arch", "Architecture", "The classifier to train. The small CNN trains in seconds on a CPU; the "
            "ResNets need a GPU for real images.", "arch", choices=_named(tuple(ARCH_NAMES), ARCH_NAMES)),
    Setting("train.epochs", "Epochs", "How many times training goes through all training images.", "int",
            1, 1000, unit="epochs"),
    Setting("train.lr", "Learning rate", "Step size of the optimiser (Adam). Too high makes training "
            "unstable, too low makes it slow.", "log", 1e-6, 1.0),
    Setting("train.batch_size", "Batch size", "Images per training step. Larger batches need more memory.",
            "int", 1, 4096, unit="images"),
    Setting("train.weight_decay", "Weight decay", "L2 penalty on the weights while training (Adam's weight "
            "decay); 0 switches it off.", "log", 0.0, 1.0),
    Setting("train.seed", "Seed", "Seed of the weights' initialisation and of the batches' order.", "int",
            0, 2**31 - 1),
    # -- the alignment set -----------------------------------------------------------------------------
    Setting("sampling.n", "Images (N)", "How many training images are explained and reviewed by the critic "
            "and you.", "int", 1, 100000, unit="images"),
    Setting("sampling.strategy", "Which images", "Which training images to review. A model is most "
            "confident where it uses a shortcut, so the most confident images find shortcuts best.",
            "choice", choices=_named(STRATEGIES, STRATEGY_NAMES), what="strategy"),
    Setting("sampling.per_class", "N per class", "Take N images of every class instead of N in all.", "bool",
            choices=((True, "On"), (False, "Off"))),
    Setting("sampling.correct_only", "Correctly classified only", "Review only images the model classifies "
            "correctly.", "bool", choices=((True, "On"), (False, "Off"))),
    Setting("sampling.seed", "Seed", "Seed of the random choice of images.", "int", 0, 2**31 - 1),
    # -- explanations ------------------------------------------------------------------------------------
    Setting("explain.method", "Method", "How the model's attention is computed: DeepLIFT-SHAP (compares each "
            "image with reference images) or the faster input × gradient.", "choice",
            choices=_named(METHODS, METHOD_NAMES), what="attribution method"),
    Setting("explain.background", "Compared with", "What DeepLIFT-SHAP compares each image with: an image's "
            "evidence is how it differs from this. Random training images is the paper's choice; the "
            "typical (median) training image also shows a shortcut that is a missing or faint mark; a black "
            "image suits pictures on a black background.", "choice",
            choices=_named(BACKGROUND_KINDS, BACKGROUND_NAMES), what="reference images"),
    Setting("explain.n_background", "Reference images", "How many random training images each image is "
            "compared with. More gives steadier maps but takes longer.", "int", 1, 256, unit="images"),
    Setting("explain.batch_size", "Batch size", "Images explained at once. Larger batches need more "
            "memory.", "int", 1, 4096, unit="images"),
    Setting("explain.seed", "Seed", "Seed of the choice of reference images.", "int", 0, 2**31 - 1),
    # -- segments (PPEPS-WGM) ----------------------------------------------------------------------------
    Setting("segment.n_components", "Segments (J)", "Into how many regions each attribution map is split for "
            "the verdicts.", "int", 1, 16, unit="segments"),
    Setting("segment.evidence", "Segments follow", "Which evidence the segments are fitted to: only evidence "
            "for the class (the paper's choice), or evidence for and against it, which also finds a shortcut "
            "that works by lowering the other classes' scores.", "choice",
            choices=_named(EVIDENCE_KINDS, EVIDENCE_NAMES), what="evidence kind"),
    Setting("segment.covariance", "Segment shape", "The covariance of each segment's Gaussian: full "
            "(any ellipse), diagonal (axis-aligned) or spherical (round).", "choice",
            choices=_named(COVARIANCE_TYPES, COVARIANCE_NAMES), what="covariance type"),
    Setting("segment.max_iter", "EM iterations", "The most EM iterations per image.", "int", 1, 100000,
            unit="iterations"),
    Setting("segment.tol", "EM tolerance", "EM stops when the weighted mean log-likelihood changes by less "
            "than this.", "log", 0.0, 1.0),
    Setting("segment.reg_covar", "Covariance regularisation", "Added to the covariance diagonal, in "
            "normalised coordinate units.", "log", 0.0, 1.0),
    Setting("segment.pixel_cell_variance", "Pixel cell variance", "Also add one pixel cell's variance "
            "(1/12 px² per axis) to the covariances.", "bool", choices=((True, "On"), (False, "Off"))),
    Setting("segment.kmeans_iter", "k-means steps", "Lloyd steps after the k-means++ seeding (0: seeds "
            "only).", "int", 0, 10000, unit="steps"),
    Setting("segment.seed", "Seed", "Seed of the k-means++ draws.", "int", 0, 2**31 - 1),
    # -- retraining with the verdicts (RRR) --------------------------------------------------------------
    Setting("align.penalty", "Penalty", "What retraining forbids. Counterfactual (default): the regions "
            "judged spurious are exchanged with other training images' content, and the exchanged images "
            "must keep their classes, so the model cannot use those regions. Input gradient: the paper's "
            "penalty on the model's sensitivity inside the regions; it can be met without removing the "
            "reliance (docs/method.md).", "choice", choices=_named(PENALTIES, PENALTY_NAMES), what="penalty"),
    Setting("align.lambda", "Penalty strength (λ)", "How strongly retraining enforces the penalty. Automatic "
            "(default): chosen from how much the model relies on the regions judged spurious, measured "
            "before and after; nothing is changed where the model does not rely on them. Untick it to set a "
            "number (0 switches the penalty off).", "strength", 0.0, 1e6, aliases=("align.lambda_", "align.λ")),
    Setting("align.reliance_floor", "Reliance floor", "Below this reliance on the regions judged spurious "
            "there is nothing to remove, and automatic strength changes nothing.", "float", 0.0, 0.999, step=0.05),
    Setting("align.gamma", "L2 on parameters (γ)", "L2 penalty on the parameters while retraining; 0 "
            "switches it off.", "log", 0.0, 1e6),
    Setting("align.epochs", "Epochs", "Passes over the training images when retraining.", "int", 1, 1000,
            unit="epochs"),
    Setting("align.batch_size", "Batch size", "Images per retraining step.", "int", 1, 4096, unit="images"),
    Setting("align.align_ratio", "Reviewed share of a batch", "Share of every batch taken from the reviewed "
            "images (with their masks); the rest are ordinary training images.", "float", 0.01, 0.95, step=0.05),
    Setting("align.lr", "Learning rate", "Step size of the retraining (1e-4 suits ResNets).", "log", 1e-6,
            1.0),
    Setting("align.seed", "Seed", "Seed of the retraining's batches.", "int", 0, 2**31 - 1),
    Setting("align.consistency_check", "Consistency check", "Leave out of the masks a 'spurious' verdict "
            "whose segment looks like the segments judged relevant in other images (a stray critic error); "
            "the ones left out are listed in Messages. Your own verdicts are always used. Works from 20 "
            "'spurious' verdicts in the set.", "bool", choices=((True, "On"), (False, "Off"))),
    Setting("align.consistency_k", "Neighbours compared", "How many segments of other images, nearest in "
            "appearance, a 'spurious' verdict is compared with.", "int", 1, 1000, unit="segments"),
    Setting("align.consistency_threshold", "Spurious share needed", "A 'spurious' verdict whose neighbours "
            "are less than this share 'spurious' is held back.", "float", 0.0, 1.0, step=0.05),
    Setting("align.consistency_min_spurious", "Spurious verdicts needed", "With fewer 'spurious' verdicts in "
            "the set, nothing is held back.", "int", 0, 1000000, unit="verdicts"),
    Setting("align.consistency_enrichment", "Enrichment needed", "Or held back where the neighbours' "
            "'spurious' share is less than this many times the set's, where that is lower.", "float", 0.0,
            1000.0, step=0.5),
    Setting("align.consistency_min_reliance", "Reliance to hold back", "A verdict on a segment the model "
            "hardly relies on (below this) is never held back.", "float", 0.0, 1.0, step=0.01),
    # -- evaluation --------------------------------------------------------------------------------------
    Setting("evaluate.n_attribution_images", "Images for the alignment score", "Test images with an "
            "artefact mask used for the alignment score.", "int", 1, 100000, unit="images"),
    Setting("evaluate.n_background", "Reference images (score)", "DeepLIFT-SHAP reference images for the "
            "alignment score.", "int", 1, 256, unit="images"),
    Setting("evaluate.min_group_size", "Smallest group", "Groups with fewer test images are left out of the "
            "worst-group accuracy.", "int", 1, 100000, unit="images"),
)
# fmt: on

_BY_NAME = {s.name: s for s in SETTINGS}
_ALIASES = {alias: s.name for s in SETTINGS for alias in s.aliases}


def names() -> list[str]:
    return [s.name for s in SETTINGS]


def canonical_name(name: str) -> str | None:
    """The one name of a setting given by any of its names (old ones included), or None."""
    name = name.strip()
    if name in _BY_NAME:
        return name
    return _ALIASES.get(name)


def setting(name: str) -> Setting:
    """The setting of this name (or an old name of it); SettingError names the close ones and all."""
    canon = canonical_name(name)
    if canon is not None:
        return _BY_NAME[canon]
    close = difflib.get_close_matches(name, [*_BY_NAME, *_ALIASES], n=3, cutoff=0.6)
    close = list(dict.fromkeys(canonical_name(c) for c in close))
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    raise SettingError(f"Unknown setting '{name}'.{hint} Known settings: {', '.join(_BY_NAME)}.")


def flatten(d: dict) -> dict[str, Any]:
    """{"align": {"lambda": 2}, "arch": "mlp"} -> {"align.lambda": 2, "arch": "mlp"} (names as given)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            for kk, vv in v.items():
                out[f"{k}.{kk}"] = vv
        else:
            out[k] = v
    return out


def check_dataclasses() -> list[str]:
    """Fields of the dataclasses that the schema lacks, and entries it has that no field has."""
    fields_ = {"arch"} | {f"{sec}.{'lambda' if f.name == 'lambda_' else f.name}"
                          for sec, klass in SECTIONS.items() for f in fields(klass)}  # fmt: skip
    return sorted(fields_ ^ set(_BY_NAME))


# -- applying values, with where they came from ---------------------------------------------------------
def apply(settings: PipelineSettings, sources: dict[str, str], values: dict[str, Any], source: str,
          strict: bool = True) -> None:  # fmt: skip
    """Set ``values`` ({dotted name: value}, names old or new) on ``settings`` and note ``source`` for each.
    strict: unknown names and bad values raise SettingError (the command line); otherwise they are skipped
    (a saved file written by another version)."""
    for name, value in values.items():
        try:
            s = setting(name)
            value = s.coerce(value)
        except SettingError as e:
            if strict:
                raise SettingError(f"{source}: {e}") from None
            continue
        s.set(settings, value)
        sources[s.name] = source


def parse_assignment(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise SettingError(f"--set expects NAME=VALUE (e.g. align.lambda=2 or train.epochs=3), got '{item}'.")
    key, value = item.split("=", 1)
    return key.strip(), value.strip()


def _saved_values(data: dict, upgrade: bool = False) -> dict[str, Any]:
    """The values of a settings file as the window saves it ({"pipeline": {...}}) or as `lvlmva settings`
    prints it (the sections at the top). upgrade: a window's file from before the penalty could choose its
    strength (``settings.upgrade_saved``)."""
    pipeline = data.get("pipeline", data) if isinstance(data, dict) else {}
    if not isinstance(pipeline, dict):
        return {}
    return flatten(upgrade_saved(pipeline) if upgrade else pipeline)


def read_settings_file(path: str | Path) -> dict[str, Any]:
    """The {name: value} of a settings file (JSON); SettingError says what is wrong with it."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise SettingError(f"Cannot read the settings file {path}: {e.strerror or e}.") from None
    except ValueError as e:
        raise SettingError(f"The settings file {path} is not JSON: {e}.") from None
    if not isinstance(data, dict):
        raise SettingError(f"The settings file {path} must hold a JSON object of sections.")
    return _saved_values(data)


# -- the settings saved for a project ---------------------------------------------------------------------
def saved_values(root: str | Path) -> dict[str, Any]:
    """The values saved in the project folder (none if there is no file or it cannot be read)."""
    path = Path(root) / SETTINGS_FILE
    if not path.is_file():
        return {}
    try:
        return _saved_values(json.loads(path.read_text(encoding="utf-8")), upgrade=True)
    except (OSError, ValueError):
        return {}


def project_settings(root: str | Path | None) -> tuple[PipelineSettings, dict[str, str]]:
    """The settings the expert saved for the project in ``root`` (the defaults for what was never saved)
    and {name: "window"} for each saved value that differs from its default. Old names are read."""
    settings, sources = PipelineSettings(), {}
    if root is not None:
        apply(settings, sources, saved_values(root), WINDOW, strict=False)
    return settings, {
        n: src for n, src in sources.items() if _BY_NAME[n].get(settings) != _BY_NAME[n].default
    }


def save_project_settings(root: str | Path, settings: PipelineSettings) -> dict:
    """Write the settings into the project folder at once (atomically); returns what was written (the
    caller logs it in the audit log, ``Project.record_settings``)."""
    data = settings.to_dict()
    path = Path(root) / SETTINGS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pipeline": data}, indent=2), encoding="utf-8")
    os.replace(tmp, path)
    return data


def resolve(
    root: str | Path | None,
    settings_file: str | Path | None = None,
    assignments: list[str] | tuple[str, ...] = (),
    flags: dict[str, Any] | None = None,
) -> tuple[PipelineSettings, dict[str, str]]:
    """The settings a command runs with, each later source winning over the earlier ones: the defaults,
    the project's saved settings (the window's), ``settings_file``, ``--set NAME=VALUE`` and the command's
    own flags ({dotted name: (value, "--flag")}). Returns the settings and the
    source of each value that is not the default."""
    settings, sources = project_settings(root)
    if settings_file:
        apply(settings, sources, read_settings_file(settings_file), f"--settings {settings_file}")
    for item in assignments or ():
        name, value = parse_assignment(item)
        apply(settings, sources, {name: value}, "--set")
    for name, (value, label) in (flags or {}).items():
        apply(settings, sources, {name: value}, label)
    return settings, {
        n: src for n, src in sources.items() if _BY_NAME[n].get(settings) != _BY_NAME[n].default
    }


def describe_sources(settings: PipelineSettings, sources: dict[str, str]) -> list[str]:
    """One line per setting that is not its default: its value and where it came from."""
    return [
        f"setting {name} = {_value_text(_BY_NAME[name].get(settings))} (from {sources[name]})"
        for name in names()
        if name in sources
    ]


def _value_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str | bool) else f"{value:g}"
