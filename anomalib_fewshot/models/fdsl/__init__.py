"""FDSL — Feature Discrepancy guided Score Learning: k-shot memory banks, a learned class-agnostic head, NAM, LFE.

Reference code: https://github.com/Follow-winds/FDSL-fewshot-anomaly-detection (paper not public).

Stage 1 trains the head once on an auxiliary annotated dataset (:func:`pretrain_head`,
``anomalib-fewshot fdsl-pretrain``); stage 2 (``anomalib train --model Fdsl --model.head_weights FILE``) only
builds the memory banks from the k shots. Without a head file the head is trained on pseudo-anomalies.

Example:
    >>> from anomalib.engine import Engine
    >>> from anomalib.data import MVTecAD
    >>> from anomalib_fewshot.models import Fdsl
    >>> model = Fdsl(k_shot=1, head_weights="fdsl_head.pt")
    >>> Engine().train(model, datamodule=MVTecAD(root="datasets/MVTecAD", category="bottle"))  # doctest: +SKIP

"""

from anomalib_fewshot.components.lifecycle.spec import DemoAccuracy, ModelSpec
from anomalib_fewshot.models.fdsl import diagnostics
from anomalib_fewshot.models.fdsl.head import pretrain_head
from anomalib_fewshot.models.fdsl.head_weights import HeadWeightsError, load_head_weights, save_head_weights
from anomalib_fewshot.models.fdsl.lightning_model import Fdsl
from anomalib_fewshot.models.fdsl.loss import FdslLoss
from anomalib_fewshot.models.fdsl.prerequisites import HEAD_PRETRAINING
from anomalib_fewshot.models.fdsl.torch_model import FdslModel

#: FDSL's surface for the rest of the package (see :class:`~anomalib_fewshot.components.lifecycle.spec.ModelSpec`).
FDSL_SPEC = ModelSpec(
    name="Fdsl",
    model_class=Fdsl,
    diagnostics=diagnostics,
    cost_shots=1,  # banks from 1 shot; a step is the pseudo-anomaly head's (its default batch of 8)
    prerequisites=(HEAD_PRETRAINING,),
    # pseudo-anomaly head, 10 of 20 epochs; measured 0.91 / 0.99
    demo_accuracy=DemoAccuracy(0.85, 0.95, {"epochs": 10}),
    short_schedule={"epochs": 1, "pseudo_samples": 8},
)

__all__ = [
    "FDSL_SPEC",
    "Fdsl",
    "FdslLoss",
    "FdslModel",
    "HeadWeightsError",
    "load_head_weights",
    "pretrain_head",
    "save_head_weights",
]
