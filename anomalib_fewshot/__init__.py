"""anomalib_fewshot: few-shot anomaly detection models for Anomalib.

Importing this package is cheap: it imports neither torch nor anomalib. The model classes are
reachable lazily as ``anomalib_fewshot.Dfd`` (or from :mod:`anomalib_fewshot.models`), and are
registered with ``anomalib.models`` automatically by the start-up hook in :mod:`anomalib_fewshot._autoload`.
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY_MODELS = ("Dfd", "Ed", "Fdsl", "Pcsnet")

__all__ = ["__version__", *_LAZY_MODELS]


def __getattr__(name: str) -> object:
    """Import model classes on first access, so ``import anomalib_fewshot`` stays light."""
    if name in _LAZY_MODELS:
        from anomalib_fewshot import models

        return getattr(models, name)
    msg = f"module 'anomalib_fewshot' has no attribute {name!r}"
    raise AttributeError(msg)
