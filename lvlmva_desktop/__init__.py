"""LVLM-VA Desktop: audit and correct small image classifiers with a local vision-language model."""

from lvlmva_desktop.core.runtime.offline import enforce_offline

# Before any entry point can import transformers or huggingface_hub: the tool never downloads (core/runtime/offline.py).
enforce_offline()

__version__ = "0.1.0"
