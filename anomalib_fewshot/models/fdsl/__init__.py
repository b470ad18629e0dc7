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

from anomalib_fewshot.models.fdsl.head import HeadWeightsError, load_head_weights, pretrain_head, save_head_weights
from anomalib_fewshot.models.fdsl.lightning_model import Fdsl
from anomalib_fewshot.models.fdsl.loss import FdslLoss
from anomalib_fewshot.models.fdsl.torch_model import FdslModel

__all__ = [
    "Fdsl",
    "FdslLoss",
    "FdslModel",
    "HeadWeightsError",
    "load_head_weights",
    "pretrain_head",
    "save_head_weights",
]
