"""Classifier architectures: the paper's two-layer MLP, a small CNN for CPU demos, and every torchvision
classification network (core/method/architectures.py), with the preprocessing each model version records.

Every ReLU is its own module, used once: DeepLIFT (captum) hooks modules, and torchvision's ResNet blocks
reuse one ReLU per block, which silently corrupts the attributions. Nothing is downloaded: torchvision
networks start from random weights or from a local weights file the user gives.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet

from lvlmva_desktop.core.method.architectures import (
    Preprocess,
    Preprocessed,
    Preprocessing,
    build_torchvision,
    check_architecture,
    default_preprocessing,
    network_channels,
    network_of,
)


@dataclass
class ModelSpec:
    """Everything needed to rebuild a model from its weights; stored in the safetensors metadata."""

    arch: str
    num_classes: int
    in_channels: int
    image_size: tuple[int, int]
    hidden: int = 128
    #: Preprocessing.to_dict(); None (model versions made before it was recorded): the images as stored
    preprocess: dict | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["image_size"] = list(self.image_size)
        return d

    def preprocessing(self) -> Preprocessing:
        """What this model does to the project's images before its first layer."""
        if self.preprocess is None:
            return Preprocessing(input_size=tuple(self.image_size))
        return Preprocessing.from_dict(self.preprocess)

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        d = dict(d)
        d["image_size"] = tuple(d["image_size"])
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


class HookBoundary(nn.Module):
    """Identity that returns a new tensor, placed between two adjacent non-linear modules.

    captum's DeepLIFT hooks register tensor hooks on a module's input and output; when a ReLU feeds a
    MaxPool directly, both hooks sit on one tensor and the ReLU reads the gradient before the pool's rule
    has rewritten it, which breaks summation-to-delta. A copy in between keeps the two hooks apart.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


class MLP(nn.Module):
    """Two hidden layers as in the RRR / LVLM-VA DecoyMNIST experiments."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 128) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(in_features, hidden)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(hidden, hidden)
        self.relu2 = nn.ReLU()
        self.out = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.relu2(self.fc2(self.relu1(self.fc1(self.flatten(x))))))


class SmallCNN(nn.Module):
    """Three conv-batchnorm-ReLU blocks and global average pooling: trains in seconds on a CPU at 28-96 px."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 16) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1),
            nn.BatchNorm2d(w),
            nn.ReLU(),
            HookBoundary(),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1),
            nn.BatchNorm2d(2 * w),
            nn.ReLU(),
            HookBoundary(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1),
            nn.BatchNorm2d(4 * w),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _BasicBlock(tv_resnet.BasicBlock):
    """torchvision's BasicBlock with one ReLU module per use and no in-place ops (DeepLIFT-safe)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.relu = nn.ReLU()
        self.relu_out = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu_out(out + identity)


class _Bottleneck(tv_resnet.Bottleneck):
    """torchvision's Bottleneck with one ReLU module per use and no in-place ops (DeepLIFT-safe)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.relu = nn.ReLU()
        self.relu2 = nn.ReLU()
        self.relu_out = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu_out(out + identity)


def spec_for(
    arch: str,
    classes: int,
    channels: int,
    image_size: tuple[int, int],
    origin: str = "scratch",
    preprocess: dict | None = None,
) -> ModelSpec:
    """The spec of a new model version of ``arch`` for a project with ``classes``, ``channels`` and
    ``image_size``; ``origin`` (scratch, finetune, imported): where its weights come from, which decides
    the default preprocessing (architectures.default_preprocessing); ``preprocess``: what the user set
    (input_size, resize, mean, std)."""
    arch = check_architecture(arch)
    pre = default_preprocessing(arch, image_size, channels, origin, **(preprocess or {}))
    return ModelSpec(
        arch=arch,
        num_classes=classes,
        in_channels=network_channels(arch, channels, origin),
        image_size=tuple(image_size),
        preprocess=pre.to_dict(),
    )


def build_model(spec: ModelSpec) -> nn.Module:
    """The network of ``spec``, with its preprocessing in front when that is not the identity."""
    if spec.arch == "mlp":
        h, w = spec.image_size
        net: nn.Module = MLP(spec.in_channels * h * w, spec.num_classes, spec.hidden)
    elif spec.arch == "small_cnn":
        net = SmallCNN(spec.in_channels, spec.num_classes)
    else:
        net = build_torchvision(check_architecture(spec.arch), spec.num_classes, spec.in_channels)
    pre = spec.preprocessing()
    if pre.is_identity(spec.image_size):
        return net
    return Preprocessed(Preprocess(pre, spec.in_channels), net)


def check_no_reused_modules(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Names of leaf modules called more than once in a forward pass (DeepLIFT needs none)."""
    calls: dict[str, int] = {}
    hooks = []
    for name, mod in model.named_modules():
        if len(list(mod.children())) == 0:
            hooks.append(
                mod.register_forward_hook(lambda m, i, o, n=name: calls.__setitem__(n, calls.get(n, 0) + 1))
            )
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return [n for n, c in calls.items() if c > 1]


def _read_weights(path: Path) -> object:
    """The tensors of a safetensors file, or of a .pth/.pt read with ``weights_only=True``.

    A pickle may name any Python callable, and unpickling calls it: weights_only allows tensors and plain
    containers only, so a checkpoint carrying anything else is refused before any of it runs.
    """
    import pickle

    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise ValueError(f"{path} is not a readable safetensors file ({e}).") from None
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only load failed" not in str(e).lower():
            raise ValueError(f"{path} is not a PyTorch weights file that can be read ({e}).") from None
        # torch's own text advises weights_only=False; only its one-line reason is worth showing
        m = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\.\s|\n\n|$)", str(e), re.S)
        why = " ".join(m.group(1).split()) if m else "not plain tensors"
        advice = "Save only the model's weights: torch.save(model.state_dict(), path) or a safetensors file."
        if "unsupported global" in why.lower():  # the pickle names a callable or class to run
            raise ValueError(
                f"{path} holds Python objects besides tensors ({why}); loading them could run code, so it "
                f"was refused. {advice}"
            ) from None
        raise ValueError(
            f"{path} is not a checkpoint of plain tensors that can be read safely ({why}), so it was "
            f"refused. {advice}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError) as e:  # not a torch file
        raise ValueError(f"{path} is not a PyTorch weights file that can be read ({e!r}).") from None


def _first(names: list[str], n: int = 5) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def load_pretrained_weights(
    model: nn.Module, spec: ModelSpec, path: str | Path, complete: bool = False
) -> list[str]:
    """Load backbone weights from a local file (safetensors, or a .pth read with weights_only=True).

    Keys whose shape does not fit (the classifier head for another number of classes) are skipped; an
    RGB first convolution is summed over colours for grayscale input. Returns the skipped keys. Weights
    that are not finite (NaN, infinity) are refused. With ``complete`` (an imported classifier, used as
    it is) every parameter and buffer of the model must come from the file, batch-norm running statistics
    included: a partial checkpoint is refused, naming the first missing or misshapen tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Weights file not found: {path}")
    state = _read_weights(path)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors.")
    model = network_of(model)  # a file from elsewhere holds the network's weights, not the preprocessing
    own = model.state_dict()
    state = {k.removeprefix("module."): v for k, v in state.items()}
    skipped, unexpected, misshapen = [], [], []
    fitted = {}
    for k, v in state.items():
        if k not in own:
            skipped.append(k)
            if not k.endswith("num_batches_tracked"):  # a counter, not a weight
                unexpected.append(k)
            continue
        if (
            v.ndim == 4
            and v.shape[1] == 3
            and own[k].ndim == 4
            and own[k].shape[1] == 1
            and k == _first_conv(own)
        ):
            v = v.sum(dim=1, keepdim=True)  # an RGB network's first convolution, for grey images
        if own[k].shape != v.shape:
            skipped.append(k)
            misshapen.append(f"{k} (the file has {tuple(v.shape)}, a {spec.arch} here {tuple(own[k].shape)})")
            continue
        fitted[k] = v
    needed = [k for k in own if not k.endswith("num_batches_tracked")]
    missing = [k for k in needed if k not in state]
    if len(fitted) < len(needed) / 2:  # not this architecture at all (a head of another size is fine)
        raise ValueError(_mismatch_text(path, spec, state, len(needed), missing, unexpected, misshapen))
    bad = [k for k, v in fitted.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(
            f"{path} holds weights that are not finite numbers (NaN or infinity) in {_first(bad)}; such a "
            "model cannot classify anything, so it was refused."
        )
    if complete and (missing or unexpected or misshapen):
        raise ValueError(_mismatch_text(path, spec, state, len(needed), missing, unexpected, misshapen))
    model.load_state_dict(fitted, strict=False)
    return skipped


def _first_conv(own: dict[str, torch.Tensor]) -> str | None:
    return next((k for k, v in own.items() if v.ndim == 4), None)


def _mismatch_text(
    path: Path,
    spec: ModelSpec,
    state: dict[str, torch.Tensor],
    n_needed: int,
    missing: list[str],
    unexpected: list[str],
    misshapen: list[str],
) -> str:
    """Why the weights in ``path`` do not make a ``spec.arch`` for this project, naming the first
    mismatches of each kind and the architectures the file does fit."""
    from lvlmva_desktop.core.method.architectures import guess_architectures

    parts = []
    if missing:
        parts.append(
            f"{len(missing)} of the model's {n_needed} tensors are not in the file (first {_first(missing, 3)})"
        )
    if unexpected:
        parts.append(
            f"{len(unexpected)} tensors in the file are not in a {spec.arch} (first {_first(unexpected, 3)})"
        )
    if misshapen:
        parts.append(f"{len(misshapen)} are of another shape (first {_first(misshapen, 2)})")
    text = (
        f"The weights in {path} do not fit a {spec.arch} for this project ({classes_hint(spec)}): "
        + "; ".join(parts)
        + "."
    )
    guesses = [a for a in guess_architectures(state) if a != spec.arch]
    if guesses:
        text += f" They look like a {' or a '.join(guesses[:3])} (--arch {guesses[0]})."
    elif misshapen and not missing and not unexpected:
        text += (
            " Were they trained for another number of classes? This project has " + classes_hint(spec) + "."
        )
    else:
        text += (
            " Export the whole state dict of the trained model (torch.save(model.state_dict(), path), or "
            "safetensors), batch-norm statistics included."
        )
    return text


def classes_hint(spec: ModelSpec) -> str:
    return f"{spec.num_classes} classes, {spec.in_channels} channel{'s' * (spec.in_channels != 1)}"


def spec_metadata(spec: ModelSpec, extra: dict | None = None) -> dict[str, str]:
    meta = {"lvlmva.spec": json.dumps(spec.to_dict())}
    for k, v in (extra or {}).items():
        meta[f"lvlmva.{k}"] = v if isinstance(v, str) else json.dumps(v)
    return meta


@dataclass
class TrainedModel:
    """A model with the spec that rebuilds it; the unit stored as a model version."""

    spec: ModelSpec
    module: nn.Module
    info: dict = field(default_factory=dict)
