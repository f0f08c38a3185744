"""LVLM-VA Desktop: audit and correct small image classifiers with a local vision-language model."""

__version__ = "0.1.0"
