"""ED: Emphasize Differences (on the FOD design), as an Anomalib model — full-shot faithful, and few-shot.

Reference code: https://github.com/Vzoooong/ED (built on FOD, ICCV 2023: https://github.com/xcyao00/FOD).
This is a clean-room re-implementation; see README.md for the protocol, measured results and every deviation.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import torch
from anomalib.metrics import Evaluator
from anomalib.models.components import AnomalibModule
from anomalib.visualization import Visualizer
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch import nn
from torchvision.transforms.v2 import functional as TF

from anomalib_fewshot.components.anomalies import random_rotation
from anomalib_fewshot.components.fewshot import validate_k_shot
from anomalib_fewshot.components.lightning import ShotModelMixin, resize_pre_processor
from anomalib_fewshot.components.pool import PoolBatch
from anomalib_fewshot.errors import InvalidArgumentError
from anomalib_fewshot.models.ed.loss import EdLoss
from anomalib_fewshot.models.ed.torch_model import EdModel

logger = logging.getLogger(__name__)

CACHE_FP16_ABOVE_BYTES = 1 << 30
AUGMENTATIONS = ("none", "flip", "flip_rotate")


class Ed(ShotModelMixin, AnomalibModule):
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
        pre_trained: load ImageNet weights when fitting starts (never at construction).
        weights_path: local backbone state-dict file.
        k_shot: training images; ``None`` (default, as released) uses every normal training image.
        few_shot_seed: seed of the shot selection, augmentation and sampling.
        few_shot_source: folder or list of images to take the shots from instead of the datamodule.
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
        batch_size: training batch size (1).
        lr: Adam learning rate (1e-4).
        smoothing_sigma: Gaussian smoothing of the map.
        token_scale: ``"none"`` (as released) or ``"rms"``: divide each level's tokens by their root mean square
            over the training images (for backbones whose features are far from unit scale, e.g. the lite one).
        cache_dtype: ``"auto"`` (float16 when the token cache would exceed 1 GiB), ``"float32"`` or ``"float16"``.
        anomaly_map: ``"rec_x_inter"`` (ED's map) or ``"rec"`` (reconstruction error alone, an ablation).
        pre_processor: anomalib pre-processor (default: resize only; the model normalises internally).
        post_processor: anomalib post-processor.
        evaluator: anomalib evaluator.
        visualizer: anomalib visualizer.

    Example:
        >>> from anomalib.data import MVTecAD
        >>> from anomalib.engine import Engine
        >>> from anomalib_fewshot.models import Ed
        >>> model = Ed()  # full-shot, as released
        >>> Engine().train(model, datamodule=MVTecAD(category="bottle"))  # doctest: +SKIP

    """

    def __init__(
        self,
        backbone: str = "wide_resnet50_2.racm_in1k",
        layers: Sequence[str] = ("layer2", "layer3"),
        pre_trained: bool = True,
        weights_path: str | None = None,
        k_shot: int | None = None,
        few_shot_seed: int = 0,
        few_shot_source: str | list[str] | None = None,
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
        batch_size: int = 1,
        lr: float = 1e-4,
        smoothing_sigma: float = 4.0,
        token_scale: Literal["none", "rms"] = "none",
        cache_dtype: Literal["auto", "float32", "float16"] = "auto",
        anomaly_map: Literal["rec_x_inter", "rec"] = "rec_x_inter",
        pre_processor: nn.Module | bool = True,
        post_processor: nn.Module | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        if pre_processor is True:
            pre_processor = resize_pre_processor(image_size)
        super().__init__(
            pre_processor=pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        for name, value in {"augment_copies": augment_copies, "epochs": epochs, "batch_size": batch_size}.items():
            if value < 1:
                msg = f"{name} must be >= 1, got {value}"
                raise InvalidArgumentError(msg)
        if augment not in AUGMENTATIONS:
            msg = f"augment must be one of {AUGMENTATIONS}, got {augment!r}"
            raise InvalidArgumentError(msg)
        if cache_dtype not in ("auto", "float32", "float16"):
            msg = f"cache_dtype must be 'auto', 'float32' or 'float16', got {cache_dtype!r}"
            raise InvalidArgumentError(msg)
        self.k_shot = validate_k_shot(k_shot)
        self.few_shot_seed = few_shot_seed
        self.few_shot_source = few_shot_source
        self.model = EdModel(
            backbone=backbone,
            layers=layers,
            pre_trained=pre_trained,
            weights_path=weights_path,
            image_size=image_size,
            d_models=d_models,
            num_heads=num_heads,
            num_layers=num_layers,
            ffn_ratio=ffn_ratio,
            dropout=dropout,
            fusion=fusion,
            ffn=ffn,
            smoothing_sigma=smoothing_sigma,
            token_scale=token_scale,
            anomaly_map=anomaly_map,
        )
        self.loss = EdLoss(lambda1=lambda1, lambda2=lambda2, use_intra=use_intra, use_inter=use_inter)
        self._pool: list[torch.Tensor] | None = None

    # ------------------------------------------------------------------ anomalib contract

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """One Adam over both level transformers (lr 1e-4)."""
        return torch.optim.Adam(self.model.levels.parameters(), lr=self.hparams.lr)

    # ------------------------------------------------------------------ fit setup
    def setup(self, stage: str | None = None) -> None:
        """On ``fit``: select the images, load weights, cache tokens, set the references, take over the loader."""
        if stage != "fit" or self._pool is not None:
            return
        self.check_pre_processor()
        self.apply_few_shot(self.trainer)
        self.model.backbone.load_weights()
        images = self.load_shot_images()
        self._pool = self._build_pool(images)
        self.install_pool_loader(
            self.trainer,
            pool_size=len(self._pool[0]),
            batch_size=int(self.hparams.batch_size),
            seed=self.few_shot_seed,
            replacement=False,
        )

    def teardown(self, stage: str | None = None) -> None:
        """Give the datamodule its own training set and loader back, free the token cache."""
        if stage == "fit":
            self.release_pool_loader()
            self.restore_train_data(self.trainer)
            self._pool = None

    def _augment(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        hp = self.hparams
        if hp.augment in ("flip", "flip_rotate") and float(torch.rand(1, generator=generator)) < 0.5:
            image = TF.horizontal_flip(image)
        if hp.augment == "flip_rotate":
            image = random_rotation(image, (-hp.rotation, hp.rotation), fill="corner", generator=generator)
        return image

    @torch.no_grad()
    def _build_pool(self, images: list[torch.Tensor], chunk: int = 8) -> list[torch.Tensor]:
        """Token cache per level ``(n·copies, L, C)``; the references are the mean over the un-augmented images."""
        hp = self.hparams
        generator = torch.Generator().manual_seed(self.few_shot_seed)
        samples = [
            image if copy == 0 or hp.augment == "none" else self._augment(image, generator)
            for image in images
            for copy in range(hp.augment_copies)
        ]
        probe = self.model.raw_tokens(samples[0][None].to(self.device))
        floats = sum(t.numel() for t in probe) * len(samples)
        dtype = {"float32": torch.float32, "float16": torch.float16}.get(hp.cache_dtype)
        if dtype is None:
            dtype = torch.float16 if floats * 4 > CACHE_FP16_ABOVE_BYTES else torch.float32
        cache = [torch.empty(len(samples), *t.shape[1:], dtype=dtype) for t in probe]
        sums = [torch.zeros(t.shape[1:], dtype=torch.float64) for t in probe]
        squares = [0.0 for _ in probe]
        for start in range(0, len(samples), chunk):
            batch = torch.stack(samples[start : start + chunk]).to(self.device)
            for level, tokens in enumerate(self.model.raw_tokens(batch)):
                cache[level][start : start + len(batch)] = tokens.to("cpu", dtype)
                originals = tokens[[i for i in range(len(batch)) if (start + i) % hp.augment_copies == 0]].double()
                sums[level] += originals.sum(0).cpu()
                squares[level] += float(originals.pow(2).sum())
        self.model.set_references(
            [(s / len(images)).float().to(self.device) for s in sums],
            rms=[(q / (len(images) * s.numel())) ** 0.5 for q, s in zip(squares, sums, strict=True)],
        )
        for level, scale in zip(cache, self.model.scales(), strict=True):
            level.div_(float(scale))  # the transformers train on scaled tokens, as they see them at test time
        logger.info(
            "ED: %d training samples (%d images x %d), token cache %.1f MB (%s)",
            len(samples),
            len(images),
            hp.augment_copies,
            sum(c.numel() * c.element_size() for c in cache) / 2**20,
            dtype,
        )
        return cache

    # ------------------------------------------------------------------ training
    def training_step(self, batch: PoolBatch, *args, **kwargs) -> STEP_OUTPUT:
        """One step: both objectives of both levels (one backward of their sum equals the code's two)."""
        del args, kwargs
        if self._pool is None:
            msg = "Ed.training_step called without a token cache (setup('fit') did not run)"
            raise RuntimeError(msg)
        indices = batch.indices.cpu()
        level_tokens = [level[indices].to(self.device, torch.float32) for level in self._pool]
        outputs = self.model.reconstruct(level_tokens)
        total = 0.0
        for index, (tokens, (reconstruction, maps)) in enumerate(zip(level_tokens, outputs, strict=True)):
            terms = self.loss(tokens, reconstruction, maps)
            total = total + terms["total"]
            self.log(f"train_rec_level{index}", terms["rec"], on_step=False, on_epoch=True, batch_size=len(indices))
        self.log("train_loss", total, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(indices))
        return {"loss": total}

    def on_validation_start(self) -> None:
        """A fit must have made optimiser steps before anomalib fits thresholds on its outputs."""
        super().on_validation_start()
        if self.trainer.state.fn == "fit" and self._pool is not None:
            self.check_optimizer_steps(self.trainer)
