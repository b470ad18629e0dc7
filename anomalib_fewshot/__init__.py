"""anomalib_fewshot: few-shot anomaly detection models for Anomalib.

Importing this package is cheap: it imports neither torch nor anomalib. The model classes are
reachable lazily as ``anomalib_fewshot.Dfd`` (or from :mod:`anomalib_fewshot.models`), and are
registered with ``anomalib.models`` automatically by the start-up hook in :mod:`anomalib_fewshot._autoload`.
The lazy names are the registry's (:data:`anomalib_fewshot.models.REGISTRY`): nothing here lists the models.
"""

from __future__ import annotations

from anomalib_fewshot._version import __version__ as __version__


def _models() -> object:
    from anomalib_fewshot import models

    return models


def __getattr__(name: str) -> object:
    """Import the models on first access to a model class (or to ``__all__``), so the package import stays light."""
    if name == "__all__":
        return ["__version__", *_models().REGISTRY]
    if name[:1].isupper():
        spec = _models().REGISTRY.get(name)
        if spec is not None:
            return spec.model_class
    msg = f"module 'anomalib_fewshot' has no attribute {name!r}"
    raise AttributeError(msg)
