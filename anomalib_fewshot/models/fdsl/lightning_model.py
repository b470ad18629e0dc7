"""FDSL: Feature Discrepancy guided Score Learning, as an Anomalib model.

Reference code: https://github.com/Follow-winds/FDSL-fewshot-anomaly-detection (a fork of APRIL-GAN). This is a
clean-room re-implementation; see README.md for the two-stage protocol, measured results and every deviation.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import torch
from anomalib.models.components import AnomalibModule
from lightning.pytorch.utilities.types import STEP_OUTPUT

from anomalib_fewshot.components.anomalies import PerlinImageAnomaly, random_flip_rotate
from anomalib_fewshot.components.lifecycle.arguments import select_arguments
from anomalib_fewshot.components.lifecycle.lightning import FitPlan, ShotModel
from anomalib_fewshot.components.lifecycle.pool import PoolBatch
from anomalib_fewshot.models.fdsl.head_weights import load_head_weights
from anomalib_fewshot.models.fdsl.loss import FdslLoss, head_loss
from anomalib_fewshot.models.fdsl.torch_model import FdslModel

logger = logging.getLogger(__name__)


class Fdsl(ShotModel, AnomalibModule):
    """FDSL few-shot anomaly detection model.

    Patch tokens of a frozen backbone (CLIP ViT-L/14-336 at 518 px, blocks 6/12/18/24, L2-normalised) are
    matched to their nearest token in a memory bank of the k normal shots; the residuals ``|f − nn|`` are scored
    by small per-level heads and a shared 5×5 neighbour-aggregation module (NAM). A local branch (LFE) does the
    same on 13×13-patch windows (stride 2) against a window bank of the same shots and fuses 0.5/0.5.

    The head is class-agnostic and is trained **once**, on an auxiliary annotated dataset
    (``anomalib-fewshot fdsl-pretrain``, :func:`~anomalib_fewshot.models.fdsl.pretrain_head`), and passed as
    ``head_weights``; the per-category fit then only builds the banks (one epoch, no gradient). Without a head
    file, ``Fdsl`` trains its head on pseudo-anomalies made from the k shots (beyond the paper).

    Args:
        backbone: ``"ViT-L-14-336"`` (open_clip, the paper) or a CNN (``"tf_efficientnet_lite0"``, offline).
        layers: ViT block numbers ``(6, 12, 18, 24)`` or CNN feature modules.
        vision_cfg: custom open_clip vision tower (tests, or a ViT with ``weights_path``).
        k_shot: normal shots in the memory banks (distinct, seeded; one draw for both banks).
        image_size: square input size (518).
        head_weights: head-weights file from ``fdsl-pretrain``; ``None`` trains the pseudo-anomaly head.
        head_dims: hidden widths of the per-level heads (512, 128, 32).
        first_batch_norm: batch-normalise residuals first.
        nam: neighbour aggregation module.
        lfe: local-enhanced (window) branch.
        window_size: LFE window in grid cells (13).
        window_stride: LFE stride in grid cells (2).
        lfe_weight: window-branch weight (0.5).
        align: ``"cosine"`` (code default) or ``"l2"`` nearest neighbour.
        absolute: absolute residuals.
        score_mode: ``"mean"``, ``"score"`` or ``"map_max"`` (see :class:`FdslModel`).
        epochs: pseudo-anomaly head epochs (ignored with ``head_weights``).
        pseudo_samples: pseudo-anomaly samples per epoch.
        pseudo_probability: probability that a pseudo sample gets a Perlin anomaly.
        pseudo_rotation: rotation range (degrees) of the normal variation applied to shots for pseudo samples.
        train_bank: the bank a pseudo sample is matched against while the head trains: ``"all"`` (every shot,
            its own source included) or ``"leave_one_out"`` (every shot but its source, as at test time, where an
            image is never in the bank; at k = 1 there is no other shot and the full bank is used).
        batch_size: pseudo-anomaly head batch size (8, as the paper's head training).
        lr: Adam learning rate (1e-3).
        betas: Adam betas (0.5, 0.999).
        match_chunk: query tokens per nearest-neighbour block.
        window_index: image-index window memory (the code's ``useImgIdx``, off as in its scripts): each test window
            is matched only against the reference windows its pooled embedding picks.
        window_match: with ``window_index``: ``"union"`` (the code: a window's tokens are matched against the union
            of the windows the image's windows picked) or ``"own"`` (against the window it picked itself).
        nam_combine: ``"replace"`` (the code: the final map is the NAM's) or ``"max"`` (the larger of the head's
            raw and the NAM's anomalous probability per cell; inference only, training unchanged).
        window_features: LFE window tokens ``"encode"``-d from each window crop (the method) or ``"crop"``-ped from
            the global feature maps (one backbone pass per image; an approximation for speed).
        quick_gelu: QuickGELU in a CLIP backbone (OpenAI weights need it).
        **kwargs: the arguments of :class:`~anomalib_fewshot.components.lifecycle.lightning.ShotModel`.

    Example:
        >>> from anomalib_fewshot.models import Fdsl
        >>> from anomalib.data import MVTecAD
        >>> from anomalib.engine import Engine
        >>> model = Fdsl(k_shot=1, head_weights="heads/fdsl_visa.pt")  # paper configuration
        >>> Engine().train(model, datamodule=MVTecAD(category="bottle"))  # doctest: +SKIP

    """

    default_image_size = (518, 518)
    quantization_model_type = "transformer"  # NNCF keeps the attention's sensitive operations in floating point
    quantization_scope = "no_matmul"  # development screen (docs/benchmarks/int8_dev): the smallest worst loss

    positive_arguments = ("epochs", "pseudo_samples", "batch_size")

    def __init__(
        self,
        backbone: str = "ViT-L-14-336",
        layers: Sequence[int | str] = (6, 12, 18, 24),
        vision_cfg: dict[str, Any] | None = None,
        k_shot: int | None = 1,
        image_size: int = 518,
        head_weights: str | None = None,
        head_dims: Sequence[int] = (512, 128, 32),
        first_batch_norm: bool = True,
        nam: bool = True,
        lfe: bool = True,
        window_size: int = 13,
        window_stride: int = 2,
        lfe_weight: float = 0.5,
        align: Literal["cosine", "l2"] = "cosine",
        absolute: bool = True,
        score_mode: Literal["mean", "score", "map_max"] = "mean",
        epochs: int = 20,
        pseudo_samples: int = 64,
        pseudo_probability: float = 0.5,
        pseudo_rotation: float = 10.0,
        train_bank: Literal["all", "leave_one_out"] = "all",
        batch_size: int = 8,
        lr: float = 1e-3,
        betas: Sequence[float] = (0.5, 0.999),
        match_chunk: int = 4096,
        quick_gelu: bool = True,
        window_index: bool = False,
        window_match: Literal["union", "own"] = "union",
        nam_combine: Literal["replace", "max"] = "replace",
        window_features: Literal["encode", "crop"] = "encode",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.head_weights = None if head_weights in (None, "") else str(head_weights)
        self.model = FdslModel(**select_arguments(FdslModel.__init__, self.hparams))
        self.loss = FdslLoss()
        self._shots: torch.Tensor | None = None
        self._anomaly: PerlinImageAnomaly | None = None
        self._generator: torch.Generator | None = None
        self.head_metadata: dict[str, Any] = {}

    # ------------------------------------------------------------------ anomalib contract
    @property
    def trains_head(self) -> bool:
        """True when the fit trains the pseudo-anomaly head (no ``head_weights``)."""
        return self.head_weights is None

    @property
    def fit_requires_steps(self) -> bool:
        """Only the pseudo-anomaly head makes optimiser steps; with a head file the fit builds banks only."""
        return self.trains_head

    @property
    def fit_epochs(self) -> int:
        """One epoch (banks only) with a head file; ``epochs`` for the pseudo-anomaly head."""
        return int(self.hparams.epochs) if self.trains_head else 1

    def configure_optimizers(self) -> torch.optim.Optimizer | None:
        """Adam (lr 1e-3, betas (0.5, 0.999)) over heads and NAM for the pseudo head; nothing with a head file."""
        if not self.trains_head:
            return None
        params = list(self.model.heads.parameters())
        if self.model.nam is not None:
            params += list(self.model.nam.parameters())
        return torch.optim.Adam(params, lr=self.hparams.lr, betas=tuple(self.hparams.betas))

    # ------------------------------------------------------------------ fit lifecycle
    def load_pretrained_weights(self) -> None:
        """The head file (when given), then the frozen feature extractor's weights."""
        if self.head_weights is not None:
            self.head_metadata = load_head_weights(self.model, self.head_weights)
        self.model.features.load_weights()

    def prepare_fit(self, images: list[torch.Tensor]) -> FitPlan:
        """Build both banks from the shots; the pseudo-anomaly head trains on ``pseudo_samples`` draws per epoch."""
        shots = torch.stack(images).to(self.device)
        self.model.prepare(shots)
        self._shots = shots
        logger.info(
            "FDSL: banks from %d shots: %s global and %s window tokens per level",
            len(shots),
            self.model.bank_0.shape[0],
            self.model.window_bank_0.shape[0],
        )
        if not self.trains_head:
            return FitPlan(pool_size=1, batch_size=1)
        self._generator, self._anomaly = self._pseudo_generators()
        return FitPlan(pool_size=int(self.hparams.pseudo_samples), batch_size=int(self.hparams.batch_size))

    def release_fit(self) -> None:
        """Free the shots."""
        self._shots = None

    def _pseudo_generators(self) -> tuple[torch.Generator, PerlinImageAnomaly]:
        """The seeded generator and the Perlin anomaly source of the pseudo-anomaly head."""
        generator = torch.Generator().manual_seed(self.train_seed)
        return generator, PerlinImageAnomaly(probability=float(self.hparams.pseudo_probability))

    def training_samples(self, images: list[torch.Tensor], count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` pseudo-anomaly head samples (shots with flips/rotation, then maybe a Perlin anomaly), seeded.

        With a head file the fit trains nothing: the shots themselves, empty masks.
        """
        if not self.trains_head:
            return super().training_samples(images, count)
        saved = self._shots, self._generator, self._anomaly
        try:
            self._shots = torch.stack(images)
            with torch.random.fork_rng(devices=[]):  # the Perlin draws use the global generator (seeded by the fit)
                torch.manual_seed(self.train_seed)
                self._generator, self._anomaly = self._pseudo_generators()
                samples, masks, _ = self._pseudo_batch(count)
        finally:
            self._shots, self._generator, self._anomaly = saved
        return samples.cpu(), masks[:, None].float().cpu()

    def _pseudo_batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """``size`` pseudo samples, their masks and the index of the shot each one was made from.

        A sample is a shot with a little normal variation (flip, rotation), then maybe a Perlin anomaly.
        """
        assert self._shots is not None and self._anomaly is not None and self._generator is not None
        rotation = float(self.hparams.pseudo_rotation)
        rotation = rotation if rotation > 0 else None
        images, masks = [], []
        picks = torch.randint(len(self._shots), (size,), generator=self._generator)
        for pick in picks.tolist():
            image = random_flip_rotate(self._shots[pick].cpu(), self._generator, rotation=rotation)
            image, mask, _ = self._anomaly(image)
            images.append(image)
            masks.append(mask[0])
        return torch.stack(images).to(self.device), torch.stack(masks).to(self.device), picks.tolist()

    # ------------------------------------------------------------------ training
    def training_step(self, batch: PoolBatch, *args, **kwargs) -> STEP_OUTPUT:
        """Pseudo-anomaly head: focal + Dice on raw and NAM maps; with a head file: nothing (banks are built)."""
        del args, kwargs
        if not self.trains_head:
            return None
        self.require_fit_state(self._shots is not None)
        images, masks, sources = self._pseudo_batch(len(batch.indices))
        if self.hparams.get("train_bank", "all") == "leave_one_out":
            banks = [self.model.banks_without_shot(source, len(self._shots)) for source in sources]
        else:
            banks = [self.model.banks()] * len(images)
        total = head_loss(self.model, self.loss, images, masks, banks)
        self.log_losses(total, {}, len(images))
        return {"loss": total}
