"""ED: Emphasize Differences (on the FOD design), as an Anomalib model — full-shot faithful, and few-shot.

Reference code: https://github.com/Vzoooong/ED (built on FOD, ICCV 2023: https://github.com/xcyao00/FOD).
This is a clean-room re-implementation; see README.md for the protocol, measured results and every deviation.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import torch
from anomalib.models.components import AnomalibModule
from lightning.pytorch.utilities.types import STEP_OUTPUT

from anomalib_fewshot.components.anomalies import random_flip_rotate
from anomalib_fewshot.components.lifecycle.arguments import select_arguments
from anomalib_fewshot.components.lifecycle.feature_cache import cache_outputs
from anomalib_fewshot.components.lifecycle.lightning import FitPlan, ShotModel
from anomalib_fewshot.components.lifecycle.pool import PoolBatch
from anomalib_fewshot.models.ed.loss import EdLoss
from anomalib_fewshot.models.ed.torch_model import EdModel

logger = logging.getLogger(__name__)


class Ed(ShotModel, AnomalibModule):
    """ED anomaly detection model (full-shot as released; few-shot with ``k_shot``).

    Frozen backbone levels (3×3 average pooled) are reconstructed by one transformer per level. Each encoder
    layer attends to the image itself (intra) and to fixed **reference features** — the per-position mean over
    the training images, a registered buffer — (inter); both attentions are trained against learned
    Gaussian-prior target correlations in a minimax fashion, fused by the D2Fusion MLP and refined by a
    depthwise-conv FFN with a median term. The anomaly map is reconstruction error × inter-correlation
    discrepancy per level, up-sampled, averaged, smoothed (σ=4); the image score is its maximum.

    Args:
        backbone: backbone name; ``"wide_resnet50_2.racm_in1k"`` (timm's default WRN-50, as the code) or
            ``"tf_efficientnet_lite0"`` (lite).
        layers: two feature levels (``layer2``, ``layer3``).
        k_shot: training images; ``None`` (default, as released) uses every normal training image.
        image_size: square input size (256).
        d_models: transformer width per level (256, 512).
        num_heads: attention heads (8).
        num_layers: encoder layers per level (3).
        ffn_ratio: FFN expansion (4).
        dropout: dropout (0).
        fusion: ``"d2fusion"`` (ED) or ``"difference"`` (FOD).
        ffn: ``"median_dwconv"`` (ED) or ``"mlp"`` (FOD).
        lambda1: weight of the association terms (0.5).
        lambda2: weight of the entropy terms (0.5).
        use_intra: train the intra-image association.
        use_inter: train the inter-image association.
        augment: augmentation of the training copies (few-shot adaptation, not in the original): ``"none"``,
            ``"flip"`` (horizontal) or ``"flip_rotate"`` (horizontal flip and rotation within ±``rotation``°).
        augment_copies: training samples per image (1 = the images themselves, as released).
        rotation: rotation range in degrees for ``"flip_rotate"``.
        epochs: epochs over the training samples (100).
        steps: optimiser steps of the fit instead of ``epochs`` (few-shot adaptation, not in the original):
            ``ceil(steps / batches per epoch)`` epochs over the samples, so the schedule does not grow with the
            number of shots (``None``, default: ``epochs``).
        batch_size: training batch size (1).
        lr: Adam learning rate (1e-4).
        smoothing_sigma: Gaussian smoothing of the map.
        token_scale: ``"none"`` (as released) or ``"rms"``: divide each level's tokens by their root mean square
            over the training images (for backbones whose features are far from unit scale, e.g. the lite one).
        cache_dtype: ``"auto"`` (float16 when the token cache would exceed 1 GiB), ``"float32"`` or ``"float16"``.
        anomaly_map: ``"rec_x_inter"`` (ED's map) or ``"rec"`` (reconstruction error alone, an ablation).
        inter_exponent: ``γ`` of the map ``rec × inter^γ`` (1: ED's map; 0: the reconstruction error alone);
            inference only, so it can be changed on a fitted model (``model.model.inter_exponent``).
        **kwargs: the arguments of :class:`~anomalib_fewshot.components.lifecycle.lightning.ShotModel`.

    Example:
        >>> from anomalib_fewshot.models import Ed
        >>> from anomalib.data import MVTecAD
        >>> from anomalib.engine import Engine
        >>> model = Ed()  # full-shot, as released
        >>> Engine().train(model, datamodule=MVTecAD(category="bottle"))  # doctest: +SKIP

    """

    quantization_model_type = "transformer"  # NNCF keeps the attention's sensitive operations in floating point

    positive_arguments = ("augment_copies", "epochs", "steps", "batch_size")

    def __init__(
        self,
        backbone: str = "wide_resnet50_2.racm_in1k",
        layers: Sequence[str] = ("layer2", "layer3"),
        k_shot: int | None = None,
        image_size: int = 256,
        d_models: Sequence[int] = (256, 512),
        num_heads: int = 8,
        num_layers: int = 3,
        ffn_ratio: int = 4,
        dropout: float = 0.0,
        fusion: Literal["d2fusion", "difference"] = "d2fusion",
        ffn: Literal["median_dwconv", "mlp"] = "median_dwconv",
        lambda1: float = 0.5,
        lambda2: float = 0.5,
        use_intra: bool = True,
        use_inter: bool = True,
        augment: Literal["none", "flip", "flip_rotate"] = "none",
        augment_copies: int = 1,
        rotation: float = 15.0,
        epochs: int = 100,
        steps: int | None = None,
        batch_size: int = 1,
        lr: float = 1e-4,
        smoothing_sigma: float = 4.0,
        token_scale: Literal["none", "rms"] = "none",
        cache_dtype: Literal["auto", "float32", "float16"] = "auto",
        anomaly_map: Literal["rec_x_inter", "rec"] = "rec_x_inter",
        inter_exponent: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model = EdModel(**select_arguments(EdModel.__init__, self.hparams))
        self.loss = EdLoss(**select_arguments(EdLoss.__init__, self.hparams))
        self._pool: list[torch.Tensor] | None = None

    # ------------------------------------------------------------------ anomalib contract

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """One Adam over both level transformers (lr 1e-4)."""
        return torch.optim.Adam(self.model.levels.parameters(), lr=self.hparams.lr)

    # ------------------------------------------------------------------ fit lifecycle
    def prepare_fit(self, images: list[torch.Tensor]) -> FitPlan:
        """Cache the tokens of the images and their augmented copies, set the references; one epoch = the pool."""
        self._pool = self._build_pool(images)
        return FitPlan(pool_size=len(self._pool[0]), batch_size=int(self.hparams.batch_size), replacement=False)

    def release_fit(self) -> None:
        """Free the token cache."""
        self._pool = None

    def _augmented_copies(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """``augment_copies`` training samples per image: the image, then its augmented copies (seeded)."""
        hp = self.hparams
        generator = torch.Generator().manual_seed(self.train_seed)
        flip = hp.augment in ("flip", "flip_rotate")
        rotation = hp.rotation if hp.augment == "flip_rotate" else None
        return [
            image if copy == 0 or hp.augment == "none" else random_flip_rotate(image, generator, flip, rotation)
            for image in images
            for copy in range(hp.augment_copies)
        ]

    def training_samples(self, images: list[torch.Tensor], count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """ED trains on normal images only: the shots' augmented copies (empty masks), every image in turn."""
        samples = self._augmented_copies(images)
        copies = int(self.hparams.augment_copies)
        order = [shot * copies + j for j in range(copies) for shot in range(len(images))]
        stacked = torch.stack([samples[order[i % len(order)]] for i in range(count)])
        return stacked, torch.zeros_like(stacked[:, :1])

    @torch.no_grad()
    def _build_pool(self, images: list[torch.Tensor], chunk: int = 8) -> list[torch.Tensor]:
        """Token cache per level ``(n·copies, L, C)``; the references are the mean over the un-augmented images."""
        hp = self.hparams
        copies = hp.augment_copies
        samples = self._augmented_copies(images)
        statistics = self.model.token_statistics()

        def originals(start: int, level_tokens: Sequence[torch.Tensor]) -> None:
            keep = [i for i in range(len(level_tokens[0])) if (start + i) % copies == 0]
            self.model.accumulate(statistics, [tokens[keep] for tokens in level_tokens])

        cache = cache_outputs(samples, self.model.raw_tokens, hp.cache_dtype, chunk, self.device, visit=originals)
        self.model.set_reference_statistics(statistics, len(images))
        for level, scale in zip(cache, self.model.scales(), strict=True):
            level.div_(float(scale))  # the transformers train on scaled tokens, as they see them at test time
        logger.info(
            "ED: %d training samples (%d images x %d), token cache %.1f MB (%s)",
            len(samples),
            len(images),
            copies,
            sum(c.numel() * c.element_size() for c in cache) / 2**20,
            cache[0].dtype,
        )
        return cache

    # ------------------------------------------------------------------ training
    def training_step(self, batch: PoolBatch, *args, **kwargs) -> STEP_OUTPUT:
        """One step: both objectives of both levels (one backward of their sum equals the code's two)."""
        del args, kwargs
        self.require_fit_state(self._pool is not None)
        indices = batch.indices.cpu()
        level_tokens = [level[indices].to(self.device, torch.float32) for level in self._pool]
        outputs = self.model.reconstruct(level_tokens)
        total = 0.0
        terms = {}
        for index, (tokens, (reconstruction, maps)) in enumerate(zip(level_tokens, outputs, strict=True)):
            level_terms = self.loss(tokens, reconstruction, maps)
            total = total + level_terms["total"]
            terms[f"train_rec_level{index}"] = level_terms["rec"]
        self.log_losses(total, terms, len(indices))
        return {"loss": total}
