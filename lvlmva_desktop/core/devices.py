"""Device choice: CUDA when available, CPU otherwise, always overridable by the user."""

from __future__ import annotations

import torch


def resolve_device(name: str | None = None) -> torch.device:
    """Turn 'auto' / None / 'cpu' / 'cuda' / 'cuda:1' into a torch.device, failing clearly if unavailable."""
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Device '{name}' was requested but no CUDA device is available; use --device cpu.")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"Device '{name}' does not exist: {torch.cuda.device_count()} CUDA device(s) found.")
    return dev


def describe_device(dev: torch.device) -> str:
    if dev.type == "cuda":
        return f"{torch.cuda.get_device_name(dev)} (cuda:{dev.index or 0})"
    return "CPU"
