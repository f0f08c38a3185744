"""Any torchvision classification architecture, made fit for attributions, and what its input must be.

A site's classifier is often a DenseNet, EfficientNet, ConvNeXt or ViT trained elsewhere at 224x224 with
ImageNet normalisation. ``build_torchvision`` makes such a network with its head sized to the project's
classes (weights from a local file only: nothing is ever downloaded) and removes what breaks DeepLIFT's
hooks where that is possible without changing the weights: in-place activations become out-of-place, and
the ResNet family gets one ReLU module per use. What cannot be fixed (attention, GELU, SiLU, Hardswish)
is reported by ``explain.deeplift_obstacles`` and the explanation falls back to integrated gradients.

``Preprocessing`` is what a model version does to the project's images (in [0, 1], at the project's size)
before its first layer: grey repeated to colour, resizing to the network's input size, and normalisation
by mean and std. It lives inside the model (``Preprocessed``), so training, attributions, RRR and
evaluation all see the same input and the attributions and masks stay at the project's image size.
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import densenet as tv_densenet

#: our own small networks (core/method/models.py); everything else comes from torchvision
OWN_ARCHITECTURES = ("mlp", "small_cnn")
#: ImageNet normalisation, which torchvision's pretrained weights expect
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_MODES = ("bilinear", "bicubic", "nearest")
_RELU_LIKE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU)


@functools.cache
def torchvision_architectures() -> tuple[str, ...]:
    """Every classification network torchvision builds (``list_models(module=torchvision.models)``)."""
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models))


def all_architectures() -> tuple[str, ...]:
    return OWN_ARCHITECTURES + torchvision_architectures()


def check_architecture(name: str) -> str:
    """``name`` if it is an architecture this program builds, else a ValueError with the closest names."""
    if name in all_architectures():
        return name
    close = difflib.get_close_matches(name, all_architectures(), n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    raise ValueError(
        f"Unknown architecture '{name}'.{hint} Architectures: mlp, small_cnn and every torchvision "
        "classification model (resnet18, densenet121, efficientnet_b0, convnext_tiny, vit_b_16, swin_t, ...)."
    )


@dataclass(frozen=True)
class Preprocessing:
    """What a model does to the project's images before its first layer (recorded per model version)."""

    input_size: tuple[int, int]  # (H, W) the network sees
    resize: str = "bilinear"  # how images of another size are brought to input_size
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    grey_to_colour: bool = False  # a grey image repeated into the three channels the network takes

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {', '.join(RESIZE_MODES)}, got '{self.resize}'.")
        if len(self.mean) != len(self.std) or len(self.mean) not in (1, 3):
            raise ValueError("mean and std need one value, or one per colour channel (three), each.")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}.")
        if min(self.input_size) < 1:
            raise ValueError(f"input size must be positive, got {self.input_size}.")

    def is_identity(self, image_size: tuple[int, int]) -> bool:
        return (
            tuple(self.input_size) == tuple(image_size)
            and not self.grey_to_colour
            and all(m == 0.0 for m in self.mean)
            and all(s == 1.0 for s in self.std)
        )

    def to_dict(self) -> dict:
        return {
            "input_size": list(self.input_size),
            "resize": self.resize,
            "mean": list(self.mean),
            "std": list(self.std),
            "grey_to_colour": self.grey_to_colour,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        return cls(
            input_size=tuple(int(v) for v in d["input_size"]),
            resize=d.get("resize", "bilinear"),
            mean=tuple(float(v) for v in d.get("mean", (0.0,))),
            std=tuple(float(v) for v in d.get("std", (1.0,))),
            grey_to_colour=bool(d.get("grey_to_colour", False)),
        )

    def describe(self, image_size: tuple[int, int]) -> str:
        h, w = self.input_size
        size = f"{w}x{h}" + (
            ""
            if tuple(self.input_size) == tuple(image_size)
            else f" ({self.resize} from {image_size[1]}x{image_size[0]})"
        )
        if self.grey_to_colour:
            size += ", grey repeated into 3 channels"
        if all(m == 0.0 for m in self.mean) and all(s == 1.0 for s in self.std):
            return f"input {size}, pixel values 0..1 as stored"
        fmt = lambda v: "(" + ", ".join(f"{x:g}" for x in v) + ")"  # noqa: E731
        return f"input {size}, normalised by mean {fmt(self.mean)} and std {fmt(self.std)}"


class Preprocess(nn.Module):
    """Grey to colour, resize and normalise, as differentiable tensor operations (RRR differentiates
    through them twice; DeepLIFT treats them as the linear maps they are)."""

    def __init__(self, p: Preprocessing, channels: int) -> None:
        super().__init__()
        self.size = tuple(int(v) for v in p.input_size)
        self.mode = p.resize
        self.channels = int(channels)
        self.register_buffer("mean", torch.tensor(p.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(p.std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1 and self.channels == 3:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] == 3 and self.channels == 1:
            x = 0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
        if tuple(x.shape[-2:]) != self.size:
            corners = None if self.mode == "nearest" else False
            x = F.interpolate(x, size=self.size, mode=self.mode, align_corners=corners)
        return (x - self.mean) / self.std


class Preprocessed(nn.Module):
    """A network with its preprocessing in front; its weights are ``net``'s (keys ``net.*``)."""

    def __init__(self, pre: Preprocess, net: nn.Module) -> None:
        super().__init__()
        self.pre = pre
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.pre(x))


def network_channels(arch: str, project_channels: int, origin: str = "scratch") -> int:
    """Input channels of a new network: our own networks, and the ResNet-18/50 trained here from scratch,
    take the project's channels (a grey ResNet's first convolution has one input); every other network
    takes colour, as its weights were trained, and its preprocessing repeats a grey image into three
    channels."""
    if arch in OWN_ARCHITECTURES or (arch in ("resnet18", "resnet50") and origin == "scratch"):
        return project_channels
    return 3


def network_of(model: nn.Module) -> nn.Module:
    """The network behind any preprocessing (what a weights file from elsewhere is loaded into)."""
    return model.net if isinstance(model, Preprocessed) else model


# -- torchvision networks ----------------------------------------------------------------------------------
def _fixed_input_size(arch: str) -> tuple[int, int] | None:
    """Networks that only take one input size (position embeddings of a fixed length)."""
    if arch.startswith("vit_"):
        return (224, 224) if arch != "vit_h_14" else (518, 518)
    if arch.startswith("maxvit"):
        return (224, 224)
    return None


def weights_meta(arch: str) -> dict:
    """The input size, mean and std torchvision's pretrained weights for ``arch`` were trained with
    (read from torchvision's tables; nothing is downloaded)."""
    import torchvision

    try:
        tf = torchvision.models.get_model_weights(arch).DEFAULT.transforms()
        size = int(tf.crop_size[0])
        return {"input_size": (size, size), "mean": tuple(tf.mean), "std": tuple(tf.std)}
    except Exception:  # an architecture without a weights table
        return {"input_size": (224, 224), "mean": IMAGENET_MEAN, "std": IMAGENET_STD}


def _safe_resnet_blocks(model: nn.Module) -> None:
    """torchvision's ResNet blocks call one ReLU module two or three times and the stem's ReLU feeds the
    max-pool directly; DeepLIFT needs one module per use and a tensor between two non-linear modules."""
    from torchvision.models import resnet as tv_resnet

    from lvlmva_desktop.core.method.models import HookBoundary, _BasicBlock, _Bottleneck

    for mod in model.modules():
        if type(mod) is tv_resnet.BasicBlock:
            mod.__class__ = _BasicBlock
            mod.relu = nn.ReLU()
            mod.relu_out = nn.ReLU()
        elif type(mod) is tv_resnet.Bottleneck:
            mod.__class__ = _Bottleneck
            mod.relu = nn.ReLU()
            mod.relu2 = nn.ReLU()
            mod.relu_out = nn.ReLU()
    if isinstance(model, tv_resnet.ResNet):
        model.relu = nn.Sequential(nn.ReLU(), HookBoundary())


def _separate_relu_from_pool(model: nn.Module) -> None:
    """A ReLU that feeds a max-pool directly gets a copy behind it (models.HookBoundary): DeepLIFT's two
    hooks must not sit on one tensor. Parameter-free, so no weight name changes."""
    from lvlmva_desktop.core.method.models import HookBoundary

    pairs = []
    for mod in model.modules():
        if isinstance(mod, nn.Sequential):
            names = list(mod._modules)
            for a, b in zip(names, names[1:]):
                if isinstance(mod._modules[a], _RELU_LIKE) and isinstance(mod._modules[b], nn.MaxPool2d):
                    pairs.append((mod, a))
    for seq, name in pairs:
        seq._modules[name] = nn.Sequential(seq._modules[name], HookBoundary())


class _DenseNet(tv_densenet.DenseNet):
    """torchvision's DenseNet with its last ReLU a module (it is a function call there, which DeepLIFT
    cannot see); same weights and outputs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu_final(self.features(x))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(out, (1, 1)), 1))


def make_attribution_safe(model: nn.Module) -> nn.Module:
    """Out-of-place activations, one ReLU module per use (ResNet blocks, DenseNet's last one) and a copy
    between a ReLU and the max-pool it feeds; the weights and outputs are not changed."""
    for mod in model.modules():
        if hasattr(mod, "inplace") and isinstance(mod.inplace, bool):
            mod.inplace = False
    _safe_resnet_blocks(model)
    if type(model) is tv_densenet.DenseNet:
        model.__class__ = _DenseNet
        model.relu_final = nn.ReLU()
    _separate_relu_from_pool(model)
    return model


def _replace_first_conv(model: nn.Module, in_channels: int) -> None:
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d) and mod.in_channels == 3:
            new = nn.Conv2d(
                in_channels,
                mod.out_channels,
                mod.kernel_size,
                mod.stride,
                mod.padding,
                mod.dilation,
                mod.groups if mod.groups == 1 else in_channels,
                mod.bias is not None,
            )
            parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
            setattr(parent, name.rpartition(".")[2], new)
            return


def build_torchvision(arch: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """A torchvision classifier with random weights and ``num_classes`` outputs, attribution-safe."""
    import torchvision

    kwargs: dict = {}
    if arch in ("googlenet", "inception_v3"):
        kwargs = {"aux_logits": False, "init_weights": True}
    model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **kwargs)
    if in_channels != 3:
        _replace_first_conv(model, in_channels)
    return make_attribution_safe(model)


def smallest_input(arch: str) -> int:
    """The smallest square input the network's pooling and strides accept (measured on the meta device)."""
    net = build_torchvision_on_meta(arch)
    dev = next(net.parameters()).device
    for size in (32, 64, 75, 96, 128, 160, 224):
        try:
            with torch.no_grad():
                net(torch.zeros(1, 3, size, size, device=dev))
            return size
        except Exception:
            continue
    return 224


@functools.cache
def build_torchvision_on_meta(arch: str) -> nn.Module:
    """The network without memory for its weights (on the CPU for the few whose constructor computes
    with tensors)."""
    try:
        with torch.device("meta"):
            return build_torchvision(arch, 2).eval()
    except (NotImplementedError, RuntimeError):
        return build_torchvision(arch, 2).eval()


#: where a new model version's weights come from, for its default preprocessing
ORIGINS = ("scratch", "finetune", "imported")


def default_preprocessing(
    arch: str, image_size: tuple[int, int], channels: int, origin: str = "scratch", **given
) -> Preprocessing:
    """The preprocessing a new model version gets unless the user says otherwise (``given``: any of
    input_size, resize, mean, std).

    ``origin`` "scratch": our own networks and torchvision networks trained here see the images as stored,
    at the project's size (a network that needs one size, or more pixels than the project has, gets them by
    resizing). "finetune" (from ImageNet weights): ImageNet's mean and std, at the project's size.
    "imported" (a classifier trained elsewhere): what torchvision's weights of that architecture were
    trained with, mean, std and input size (224 for most): a site's model usually follows them.
    """
    if origin not in ORIGINS:
        raise ValueError(f"origin must be one of {', '.join(ORIGINS)}, got '{origin}'.")
    image_size = (int(image_size[0]), int(image_size[1]))
    d: dict = {"input_size": image_size, "resize": "bilinear", "mean": (0.0,), "std": (1.0,)}
    d["grey_to_colour"] = channels == 1 and network_channels(arch, channels, origin) == 3
    if arch not in OWN_ARCHITECTURES:
        if origin != "scratch":
            meta = weights_meta(arch)
            d.update(mean=meta["mean"], std=meta["std"])
            if origin == "imported":
                d["input_size"] = meta["input_size"]
        fixed = _fixed_input_size(arch)
        if fixed is not None:
            d["input_size"] = fixed
        elif min(d["input_size"]) < smallest_input(arch):
            s = smallest_input(arch)
            d["input_size"] = (s, s)
    for k, v in given.items():
        if v is not None:
            d[k] = tuple(v) if isinstance(v, list) else v
    net_channels = network_channels(arch, channels, origin)
    if len(d["mean"]) not in (1, net_channels) or len(d["std"]) not in (1, net_channels):
        raise ValueError(
            f"This {arch} takes {net_channels} channel{'s' * (net_channels > 1)}: give one mean and one std, or "
            f"one per channel ({net_channels})."
        )
    return Preprocessing(**d)


def guess_architectures(state: dict, names: tuple[str, ...] | None = None) -> list[str]:
    """Architectures whose every tensor name (and every shape but the classifier head's) matches ``state``:
    what a weights file of unknown origin most likely is. Built on the meta device (no memory, no time)."""
    keys = {  # tensors, or their shapes (a safetensors header)
        k.removeprefix("module.").removeprefix("net."): tuple(v.shape if hasattr(v, "shape") else v)
        for k, v in state.items()
    }
    found = []
    for arch in names or COMMON_ARCHITECTURES:
        try:
            own = build_torchvision_on_meta(arch).state_dict()
        except Exception:
            continue
        if set(own) != set(keys):
            continue
        differ = [k for k, v in own.items() if tuple(v.shape) != keys[k]]
        if len(differ) <= 2:  # the head's weight and bias, sized to another number of classes
            found.append(arch)
    return found


#: the architectures a weights file is compared with when its architecture is not known
COMMON_ARCHITECTURES = (
    "resnet18", "resnet34", "resnet50", "resnet101", "densenet121", "densenet169", "densenet201",
    "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "efficientnet_v2_s",
    "convnext_tiny", "convnext_small", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
    "vit_b_16", "vit_b_32", "swin_t", "swin_s", "regnet_y_400mf", "vgg16", "vgg16_bn", "alexnet",
    "squeezenet1_1", "shufflenet_v2_x1_0", "googlenet", "inception_v3", "resnext50_32x4d",
    "wide_resnet50_2", "mnasnet1_0",
)  # fmt: skip
