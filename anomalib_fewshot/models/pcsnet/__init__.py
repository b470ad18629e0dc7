"""PCSNet — Prototypical Learning Guided Context-Aware Segmentation Network for few-shot anomaly detection.

Paper: Y. Jiang, Y. Cao, W. Shen, IEEE TNNLS 2024 (arXiv 2512.15319). Reference code:
https://github.com/yuxin-jiang/PCSNet.

A frozen backbone's three levels pass through a CoordConv descriptor; one frozen prototype per grid position
comes from the k shots. Training pulls normal features towards their prototypes, pushes NSA patch-swap
pseudo-anomalies away, and trains a context-aware segmentation network (PFENet-style pyramid) on mixed
normal/anomalous pairs, whose output is the anomaly map.

Example:
    >>> from anomalib.engine import Engine
    >>> from anomalib.data import MVTecAD
    >>> from anomalib_fewshot.models import Pcsnet
    >>> model = Pcsnet(k_shot=2)
    >>> Engine().train(model, datamodule=MVTecAD(root="datasets/MVTecAD", category="bottle"))  # doctest: +SKIP

"""

from anomalib_fewshot.components.lifecycle.spec import DemoAccuracy, ModelSpec
from anomalib_fewshot.models.pcsnet import diagnostics
from anomalib_fewshot.models.pcsnet.lightning_model import Pcsnet
from anomalib_fewshot.models.pcsnet.torch_model import PcsnetModel

#: PCSNet's surface for the rest of the package (see :class:`~anomalib_fewshot.components.lifecycle.spec.ModelSpec`).
PCSNET_SPEC = ModelSpec(
    name="Pcsnet",
    model_class=Pcsnet,
    diagnostics=diagnostics,
    cost_shots=2,  # prototypes from 2 shots; a step = 2 normal + 2 pseudo-anomalous images, all four terms
    demo_accuracy=DemoAccuracy(0.9, 0.9),  # the lite profile's own (short) schedule
)

__all__ = ["PCSNET_SPEC", "Pcsnet", "PcsnetModel"]
