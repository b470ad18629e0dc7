"""Few-shot anomaly detection models, registered with ``anomalib.models`` on import.

Importing this module makes the models visible to the stock ``anomalib`` CLI (``--model Dfd``),
``anomalib.models.get_model("dfd")``, ``list_models()`` and ``anomalib benchmark`` configs.
"""

from anomalib_fewshot.models.dfd import Dfd
from anomalib_fewshot.models.ed import Ed
from anomalib_fewshot.models.fdsl import Fdsl
from anomalib_fewshot.models.pcsnet import Pcsnet

__all__ = ["Dfd", "Ed", "Fdsl", "Pcsnet"]


def _register_with_anomalib() -> None:
    """Expose our classes as attributes of ``anomalib.models`` (for dotless ``class_path`` lookups)."""
    import anomalib.models as anomalib_models

    for name in __all__:
        if not hasattr(anomalib_models, name):
            setattr(anomalib_models, name, globals()[name])


_register_with_anomalib()
