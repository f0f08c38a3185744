"""The settings of the method's steps and the choices they offer: plain dataclasses, torch-free.

They live apart from the steps (``train``, ``sampling``, ``explain``, ``segment``, ``pipeline``, which
re-export them) so that the window can build its settings forms before torch is imported: the window
appears first and torch loads while the project opens (docs/ARCHITECTURE.md, "Window before torch").
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

#: The classifiers the Training pane offers; ``models.build_model`` also builds every torchvision one.
ARCHITECTURES = ("mlp", "small_cnn", "resnet18", "resnet50")
#: How ``sampling.select_alignment_set`` picks the alignment set.
STRATEGIES = ("low_entropy", "random", "high_entropy")
#: The attribution methods of ``explain.attribute``.
METHODS = ("deeplift_shap", "input_x_gradient", "integrated_gradients")
#: PPEPS-WGM's covariance types (``segment``).
COVARIANCE_TYPES = ("full", "diag", "spherical")
# which attribution PPEPS-WGM segments: the paper's positive part, or the absolute value (evidence for and
# against the class; needed where a shortcut lowers other classes' scores instead of raising the true one's)
EVIDENCE_KINDS = ("absolute", "positive")
# DeepLIFT-SHAP reference images: random training images (the paper's choice) or black images
BACKGROUND_KINDS = ("median", "train", "black")


# -- training (train.py) ------------------------------------------------------------------------------------
@dataclass
class TrainSettings:
    """ERM settings; the defaults train the small CNN / MLP on a CPU in seconds."""

    epochs: int = 8
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


#: What the alignment penalty acts on (train.fit): the counterfactual exchange of the masked regions
#: (default), the paper's input gradient, or both.
PENALTIES = ("counterfactual", "gradient", "both")


@dataclass
class AlignSettings:
    """RRR fine-tuning settings (METHOD.md step 8; docs/method.md, step 8).

    penalty: "counterfactual" (default): every alignment image's masked content is exchanged with an
    ordinary training image of the batch, and both exchanged images must keep their labels (cross-entropy);
    "gradient": the paper's penalty on the input gradient inside the masks; "both".
    lambda_: the penalty's strength, "auto" (default: chosen from the model's reliance on the masked
    regions, core/method/strength.py) or a number (used as it is; for "gradient" the paper's unnormalised sum, whose
    scale depends on the data). reliance_floor: below this reliance there is nothing to remove.

    Unpublished choices and their defaults: Adam, lr 1e-3 (MLP/small CNN; 1e-4 for ResNets), 5 epochs,
    one alignment image in four per batch, gamma (L2 on parameters) off.

    consistency_check (on by default): before the masks are built, a segment judged "spurious" whose k
    nearest segments in appearance (``consistency_k``, among the decided segments of other alignment
    images) are less than ``consistency_threshold`` "spurious" (or less than ``consistency_enrichment``
    times the set's share of "spurious" verdicts, where that is lower) is held back from the mask and
    listed for the expert's review, unless the model hardly relies on it (below
    ``consistency_min_reliance``); expert verdicts are never held back (core/method/consistency.py). With fewer
    than ``consistency_min_spurious`` "spurious" verdicts in the set there is no group to compare with,
    and nothing is held back.
    """

    lambda_: float | str = "auto"
    penalty: str = "counterfactual"
    reliance_floor: float = 0.1
    gamma: float = 0.0
    epochs: int = 5
    batch_size: int = 64
    align_ratio: float = 0.25
    lr: float = 1e-3
    seed: int = 0
    consistency_check: bool = True
    consistency_k: int = 10
    consistency_threshold: float = 0.5
    consistency_min_spurious: int = 20
    consistency_enrichment: float = 2.0
    consistency_min_reliance: float = 0.05

    def strength_is_auto(self) -> bool:
        return isinstance(self.lambda_, str) and self.lambda_.strip().lower() == "auto"

    def strength_value(self) -> float:
        """The strength to train with: the number set, or 1 (where "auto" starts)."""
        return 1.0 if self.strength_is_auto() else float(self.lambda_)

    def validate(self) -> None:
        """Raise ValueError for settings alignment cannot honour, before any work starts."""
        if self.penalty not in PENALTIES:
            raise ValueError(f"Unknown penalty '{self.penalty}'; choose one of {PENALTIES}.")
        if not self.strength_is_auto():
            if isinstance(self.lambda_, bool) or not isinstance(self.lambda_, int | float):
                raise ValueError(f"lambda must be 'auto' or a number, got {self.lambda_!r}.")
            if not math.isfinite(self.lambda_) or self.lambda_ < 0:
                raise ValueError(f"lambda must be 'auto' or a non-negative number, got {self.lambda_}.")
        if not 0.0 <= self.reliance_floor < 1.0:
            raise ValueError(f"reliance_floor must be in [0, 1), got {self.reliance_floor}.")
        if int(self.epochs) < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}.")
        if not 0.0 < self.align_ratio < 1.0:
            raise ValueError(f"align_ratio must be between 0 and 1, got {self.align_ratio}.")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lambda"] = d.pop("lambda_")
        return d

    @classmethod
    def from_dict(cls, d: dict) -> AlignSettings:
        d = dict(d)
        for alias in ("lambda", "λ"):
            if alias in d:
                d["lambda_"] = d.pop(alias)
        if isinstance(d.get("lambda_"), str) and not cls(lambda_=d["lambda_"]).strength_is_auto():
            try:  # a number given as text (a settings file, the command line)
                d["lambda_"] = float(d["lambda_"])
            except ValueError:
                pass  # validate() names it
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


# -- alignment set (sampling.py) --------------------------------------------------------------------------
@dataclass
class SamplingSettings:
    """Unpublished choices: N, global or per class (default global), correctly classified only (no)."""

    n: int = 200
    strategy: str = "low_entropy"
    per_class: bool = False
    correct_only: bool = False
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


# -- attributions (explain.py) ----------------------------------------------------------------------------
@dataclass
class ExplainSettings:
    """Attribution settings. background: what DeepLIFT-SHAP compares each image with -- "median" (default:
    the per-pixel median of up to 256 random training images, the typical image), "train" (n_background
    random training images: METHOD.md's default) or "black"; n_background counts only for "train"."""

    method: str = "deeplift_shap"
    n_background: int = 16
    batch_size: int = 32
    seed: int = 0
    background: str = "median"  # BACKGROUND_KINDS: "median" (the typical training image), "train", "black"

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        if self.background not in BACKGROUND_KINDS:
            raise ValueError(
                f"Unknown reference images '{self.background}'; choose one of {BACKGROUND_KINDS}."
            )
        if isinstance(self.n_background, bool) or int(self.n_background) < 1:
            raise ValueError(f"n_background must be at least 1, got {self.n_background!r}.")


# -- segmentation (segment.py) ----------------------------------------------------------------------------
@dataclass
class SegmentSettings:
    """PPEPS-WGM settings; see the module docstring for the units and for choices the method leaves open.

    n_components: J, the number of segments. covariance: "full", "diag" or "spherical". max_iter, tol: EM
    stops per image after max_iter iterations or when the weighted mean log-likelihood changes by less
    than tol. reg_covar: added to the covariance diagonal (normalised coordinate units). pixel_cell_variance:
    also add one pixel cell's variance, 1/12 px^2 per axis. kmeans_iter: Lloyd steps after the k-means++
    seeding (0: seeds only). seed: the k-means++ draws. evidence: what is segmented, "positive" (the
    attribution's positive part, as in the paper) or "absolute" (its absolute value: evidence for and against
    the class, so a shortcut that works by lowering the other classes' scores gets a segment too).
    """

    n_components: int = 4
    covariance: str = "full"
    max_iter: int = 100
    tol: float = 1e-4
    reg_covar: float = 1e-6
    pixel_cell_variance: bool = True
    kmeans_iter: int = 10
    seed: int = 0
    evidence: str = (
        "absolute"  # EVIDENCE_KINDS: the attribution's absolute value, or its positive part (paper)
    )

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        """Raise ValueError for settings the fit cannot honour, before any work starts."""
        if isinstance(self.n_components, bool) or not isinstance(self.n_components, int):
            raise ValueError(f"n_components must be an integer, got {self.n_components!r}.")
        if self.n_components < 1:
            raise ValueError(f"n_components must be at least 1, got {self.n_components}.")
        if self.covariance not in COVARIANCE_TYPES:
            raise ValueError(
                f"Unknown covariance type '{self.covariance}'; choose one of {COVARIANCE_TYPES}."
            )
        if self.evidence not in EVIDENCE_KINDS:
            raise ValueError(f"Unknown evidence kind '{self.evidence}'; choose one of {EVIDENCE_KINDS}.")
        if int(self.max_iter) < 1:
            raise ValueError(f"max_iter must be at least 1, got {self.max_iter}.")
        if int(self.kmeans_iter) < 0:
            raise ValueError(f"kmeans_iter must be non-negative, got {self.kmeans_iter}.")
        if not math.isfinite(self.tol) or self.tol < 0:
            raise ValueError(f"tol must be a non-negative number, got {self.tol}.")
        if not math.isfinite(self.reg_covar) or self.reg_covar < 0:
            raise ValueError(f"reg_covar must be a non-negative number, got {self.reg_covar}.")
        if self.reg_covar == 0 and not self.pixel_cell_variance:
            raise ValueError(
                "reg_covar must be positive when pixel_cell_variance is off (degenerate covariances)."
            )


# -- the whole pipeline (pipeline.py) ---------------------------------------------------------------------
@dataclass
class EvalSettings:
    n_attribution_images: int = 100  # test images with an artefact mask used for the alignment score
    n_background: int = 8  # DeepLIFT-SHAP background images for the alignment score
    min_group_size: int = 10

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PipelineSettings:
    """All settings of one pipeline run, with the defaults of METHOD.md; recorded with every run."""

    arch: str = "small_cnn"
    train: TrainSettings = field(default_factory=TrainSettings)
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    explain: ExplainSettings = field(default_factory=ExplainSettings)
    segment: SegmentSettings = field(default_factory=SegmentSettings)
    align: AlignSettings = field(default_factory=AlignSettings)
    evaluate: EvalSettings = field(default_factory=EvalSettings)

    def to_dict(self) -> dict:
        return {
            "arch": self.arch,
            "train": self.train.to_dict(),
            "sampling": self.sampling.to_dict(),
            "explain": self.explain.to_dict(),
            "segment": self.segment.to_dict(),
            "align": self.align.to_dict(),
            "evaluate": self.evaluate.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> PipelineSettings:
        def sub(klass, key):
            v = d.get(key, {})
            return klass(**{k: x for k, x in v.items() if k in klass.__dataclass_fields__})

        return cls(
            arch=d.get("arch", "small_cnn"),
            train=sub(TrainSettings, "train"),
            sampling=sub(SamplingSettings, "sampling"),
            explain=sub(ExplainSettings, "explain"),
            segment=sub(SegmentSettings, "segment"),
            align=AlignSettings.from_dict(d.get("align", {})),
            evaluate=sub(EvalSettings, "evaluate"),
        )

    @classmethod
    def from_record(cls, d: dict) -> PipelineSettings:
        """Settings as a run or explanation recorded them: a recorded section that lacks a setting added
        later ran with that setting's value from before (``LEGACY_VALUES``), not with today's default."""
        d = dict(d)
        for section, old in LEGACY_VALUES.items():
            if isinstance(d.get(section), dict):
                d[section] = {**old, **d[section]}
        return cls.from_dict(d)


#: Values that settings added after the first release had before they existed (runs recorded then).
LEGACY_VALUES = {
    "explain": {"background": "train"},
    "segment": {"evidence": "positive"},
    "align": {
        "penalty": "gradient",
        "reliance_floor": 0.0,
        "consistency_enrichment": 0.0,
        "consistency_min_reliance": 0.0,
    },
}


def upgrade_saved(d: dict) -> dict:
    """Settings a window saved before the penalty could choose its strength (no ``align.penalty``): the
    old default λ = 1 was nobody's choice and becomes "auto" with today's penalty; any other λ was
    calibrated by the expert for the input-gradient penalty, so it keeps that penalty."""
    d = {k: (dict(v) if isinstance(v, dict) else v) for k, v in d.items()}
    align = d.get("align")
    if isinstance(align, dict) and "penalty" not in align:
        value = align.get("lambda", align.get("lambda_"))
        if value is None or value == 1.0:
            align.pop("lambda", None)
            align.pop("lambda_", None)
        else:
            align["penalty"] = "gradient"
    return d
