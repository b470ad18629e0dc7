"""Few-shot anomaly detection models, registered with ``anomalib.models`` on import.

Importing this module makes the models visible to the stock ``anomalib`` CLI (``--model Dfd``),
``anomalib.models.get_model("dfd")``, ``list_models()`` and ``anomalib benchmark`` configs.

:data:`REGISTRY` is the one list of models the rest of the package iterates over (benchmark, cost profiler, branch
diagnosis, lazy names, tests): every model folder exports one
:class:`~anomalib_fewshot.components.lifecycle.spec.ModelSpec`, and the import of that spec below is the model's
only line here. ``__all__`` (the model class names) is derived from it.
"""

# The model classes are imported beside their specs so that ``from anomalib_fewshot.models import Dfd`` keeps its
# type; they are re-exported through the derived ``__all__``, which ruff cannot read.
# ruff: noqa: F401
from anomalib_fewshot.components.lifecycle.spec import ModelSpec, build_registry
from anomalib_fewshot.models.dfd import DFD_SPEC, Dfd
from anomalib_fewshot.models.ed import ED_SPEC, Ed
from anomalib_fewshot.models.fdsl import FDSL_SPEC, Fdsl
from anomalib_fewshot.models.pcsnet import PCSNET_SPEC, Pcsnet

#: Every plugin model's spec by class name, in the order of the imports above (one line per model).
REGISTRY: dict[str, ModelSpec] = build_registry([v for v in list(globals().values()) if isinstance(v, ModelSpec)])

__all__ = list(REGISTRY)


def _check_exports() -> None:
    """Each registered class is exported under its own name (a spec imported without its class is a mistake)."""
    for name, spec in REGISTRY.items():
        if globals().get(name) is not spec.model_class:
            msg = f"anomalib_fewshot.models imports the spec of {name} but not the class {name}"
            raise ImportError(msg)


def _register_with_anomalib() -> None:
    """Expose our classes as attributes of ``anomalib.models`` (for dotless ``class_path`` lookups)."""
    import anomalib.models as anomalib_models

    for name, spec in REGISTRY.items():
        if not hasattr(anomalib_models, name):
            setattr(anomalib_models, name, spec.model_class)


_check_exports()
_register_with_anomalib()
