"""PCSNet: Prototypical Learning Guided Context-Aware Segmentation Network, as an Anomalib model.

Paper: Y. Jiang, Y. Cao, W. Shen, "Prototypical Learning Guided Context-Aware Segmentation Network for Few-Shot
Anomaly Detection", IEEE TNNLS 2024 (arXiv 2512.15319). Reference code: https://github.com/yuxin-jiang/PCSNet.
This is a clean-room re-implementation; see README.md for the protocol, measured results and every deviation.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from anomalib.models.components import AnomalibModule
from lightning.pytorch.utilities.types import STEP_OUTPUT

from anomalib_fewshot.components.anomalies import NSA_CATEGORY_PARAMS, PatchSwapAnomaly, PatchSwapParams
from anomalib_fewshot.components.lifecycle.arguments import select_arguments
from anomalib_fewshot.components.lifecycle.lightning import FitPlan, ShotModel
from anomalib_fewshot.components.lifecycle.pool import PoolBatch
from anomalib_fewshot.errors import InvalidArgumentError
from anomalib_fewshot.models.pcsnet.loss import PcsnetLoss
from anomalib_fewshot.models.pcsnet.torch_model import AnomalyMap, FeatureActivation, PcsnetModel

logger = logging.getLogger(__name__)


class Pcsnet(ShotModel, AnomalibModule):
    """PCSNet few-shot anomaly detection model.

    Per category, on ``k_shot`` normal images: a frozen backbone's three levels pass through the PFA descriptor
    (3×3 average pooling, CoordConv 1×1, resize to a ``grid_size`` grid); one prototype per grid position is the
    mean descriptor of the shots under the *untrained* descriptor, then frozen. Training pulls normal features
    inside a learnable radius of their nearest prototypes (``L_NFC``), pushes NSA patch-swap pseudo-anomalies
    out (``L_AFS``), tells which image of a mixed normal/anomalous pair is anomalous (``L_PDC``) and trains the
    CAS segmentation network on the pair (``L_SEG``). At test time the CAS map (σ=4 smoothing) is the anomaly map
    and its maximum the image score.

    Args:
        backbone: backbone name; ``"wide_resnet50_2.tv_in1k"`` (paper) or ``"tf_efficientnet_lite0"`` (lite).
        layers: three feature layers (``layer1``–``layer3`` for WRN-50).
        k_shot: number of normal training images; ``None`` uses all.
        image_size: square model input size (224 in the paper).
        resize_size: resize to this size and centre-crop ``image_size`` (the paper's 256 → 224); ``None``
            resizes the whole image to ``image_size`` (anomalib's usual protocol, no border lost).
        grid_size: descriptor grid side (64); one prototype per position.
        reduced_descriptor: the reduced descriptor the reference code uses for rotation objects (grid, screw).
        use_coordinates: CoordConv coordinate channels in the descriptor (ablation switch).
        use_cas: train and use the CAS; ``False`` (ablation: PFA only) scores with the nearest-prototype distance
            and drops ``L_SEG``.
        feature_activation: ``"leaky_relu"`` on every backbone level, as the reference code (a no-op on
            WRN-50's post-ReLU features; EfficientNet-Lite's block outputs are signed), or ``"none"``.
        anomaly_map: ``"cas"``, the paper's map (the CAS output), or ``"cas+prototype"``: the CAS map plus the
            nearest-prototype distance map, each standardised by its mean and standard deviation on the shots
            (computed after training).
        prototypes: ``"mean"``, the paper's one prototype per grid position (the shots' mean descriptor), or
            ``"per_shot"``: every shot's descriptor at every position is a prototype (``k_shot·g²``; needs an
            integer ``k_shot``).
        num_nearest: nearest-prototype distances per position fed to the CAS (200).
        guide_channels: leading descriptor channels used as CAS guide features (896).
        cas_dim: CAS width (896).
        pyramid_bins: CAS pyramid bins (60, 30, 15, 8).
        cas_dropout: dropout of the CAS classifier.
        radius_init: initial radius ``r``.
        nu: soft-boundary ``ν``.
        alpha: separation margin ``α``.
        neighbors: nearest prototypes in ``L_NFC``/``L_AFS``/``L_PDC``.
        pdc_top: largest distances averaged per image in ``L_PDC``.
        afs_mode: ``"intended"`` (paper: kNN hinge at anomalous positions) or ``"original"`` (reference code).
        nfc_weight: weight of ``L_NFC``.
        afs_weight: weight of ``L_AFS``.
        pdc_weight: weight of ``L_PDC`` (50).
        seg_weight: weight of ``L_SEG`` (40).
        anomaly_width_bounds: NSA patch half-width bounds ``[[min_h, max_h], [min_w, max_w]]`` (relative);
            ``None`` uses the category's entry of the reference tables (or the default for unknown categories).
        anomaly_num_patches: NSA patches per image (``None``: category table).
        anomaly_min_object_pct: NSA minimum object share of a patch (``None``: category table).
        anomaly_min_overlap_pct: NSA minimum object overlap at the destination (``None``: category table).
        anomaly_skip_background: NSA ``[brightness, threshold]`` background rule (``None``: category table;
            ``[]`` disables it).
        pair_jitter: brightness/contrast jitter of the augmented copy that pairs with the single shot at
            ``k_shot=1`` (the method trains on pairs of normal images).
        epochs: training epochs (one epoch = ``k_shot // batch_size`` steps, at least one).
        batch_size: normal images per step (even; pairs are formed from consecutive images).
        pfa_lr: Adam learning rate of the descriptor and radius (1e-3).
        cas_lr: Adam learning rate of the CAS (1e-4).
        weight_decay: Adam weight decay (1e-5, amsgrad as in the code).
        smoothing_sigma: Gaussian smoothing of the map.
        **kwargs: the arguments of :class:`~anomalib_fewshot.components.lifecycle.lightning.ShotModel`.

    Example:
        >>> from anomalib_fewshot.models import Pcsnet
        >>> from anomalib.data import MVTecAD
        >>> from anomalib.engine import Engine
        >>> model = Pcsnet(k_shot=2)  # paper configuration (WRN-50, 224 crop)
        >>> Engine().train(model, datamodule=MVTecAD(category="bottle"))  # doctest: +SKIP

    """

    # Resize only (anomalib's usual protocol); the constructor default adds the paper's 256 → 224 crop.
    default_image_size = (224, 224)

    positive_arguments = ("epochs",)

    def __init__(
        self,
        backbone: str = "wide_resnet50_2.tv_in1k",
        layers: Sequence[str] = ("layer1", "layer2", "layer3"),
        k_shot: int | None = 2,
        image_size: int = 224,
        resize_size: int | None = 256,
        grid_size: int = 64,
        reduced_descriptor: bool = False,
        use_coordinates: bool = True,
        use_cas: bool = True,
        feature_activation: FeatureActivation = "leaky_relu",
        anomaly_map: AnomalyMap = "cas",
        prototypes: Literal["mean", "per_shot"] = "mean",
        num_nearest: int = 200,
        guide_channels: int = 896,
        cas_dim: int = 896,
        pyramid_bins: Sequence[int] = (60, 30, 15, 8),
        cas_dropout: float = 0.1,
        radius_init: float = 1e-5,
        nu: float = 1e-3,
        alpha: float = 0.2,
        neighbors: int = 3,
        pdc_top: int = 50,
        afs_mode: Literal["intended", "original"] = "intended",
        nfc_weight: float = 1.0,
        afs_weight: float = 1.0,
        pdc_weight: float = 50.0,
        seg_weight: float = 40.0,
        anomaly_width_bounds: Sequence[Sequence[float]] | None = None,
        anomaly_num_patches: int | None = None,
        anomaly_min_object_pct: float | None = None,
        anomaly_min_overlap_pct: float | None = None,
        anomaly_skip_background: Sequence[float] | None = None,
        pair_jitter: float = 0.1,
        epochs: int = 50,
        batch_size: int = 2,
        pfa_lr: float = 1e-3,
        cas_lr: float = 1e-4,
        weight_decay: float = 1e-5,
        smoothing_sigma: float = 4.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if batch_size < 2 or batch_size % 2:
            msg = f"batch_size must be an even number >= 2 (the method trains on pairs), got {batch_size}"
            raise InvalidArgumentError(msg)
        if not 0.0 <= pair_jitter < 1.0:
            msg = f"pair_jitter must be in [0, 1), got {pair_jitter}"
            raise InvalidArgumentError(msg)
        if prototypes == "per_shot" and k_shot is None:
            msg = "prototypes='per_shot' keeps every shot's descriptors: it needs an integer k_shot, got None"
            raise InvalidArgumentError(msg)
        sets = int(k_shot) if prototypes == "per_shot" else 1
        self.model = PcsnetModel(**select_arguments(PcsnetModel.__init__, self.hparams), prototype_sets=sets)
        self.loss = PcsnetLoss(**select_arguments(PcsnetLoss.__init__, self.hparams))
        self.patch_swap_params(None)  # validates the anomaly arguments now rather than when fitting starts
        self._shots: list[torch.Tensor] | None = None
        self._anomaly: PatchSwapAnomaly | None = None
        self._rng: np.random.Generator | None = None

    # ------------------------------------------------------------------ anomalib contract

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam (amsgrad) with the code's two learning rates: PFA (descriptor, radius) and CAS."""
        hp = self.hparams
        groups = [{"params": [*self.model.descriptor.parameters(), self.model.radius], "lr": hp.pfa_lr}]
        if self.model.cas is not None:
            groups.append({"params": self.model.cas.parameters(), "lr": hp.cas_lr})
        return torch.optim.Adam(groups, weight_decay=hp.weight_decay, amsgrad=True)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Also read checkpoints written before ``feature_activation``/``anomaly_map`` existed, as they ran.

        Those models applied no activation to the backbone levels and mapped with the CAS alone.
        """
        super().on_load_checkpoint(checkpoint)
        if "feature_activation" not in checkpoint.get("hyper_parameters", {"feature_activation": None}):
            self.model.feature_activation = self.hparams.feature_activation = "none"
        checkpoint["state_dict"].setdefault("model.map_statistics", self.model.map_statistics.clone())

    # ------------------------------------------------------------------ pseudo-anomalies
    def patch_swap_params(self, category: str | None) -> PatchSwapParams:
        """NSA settings: the category's table entry, overridden by every ``anomaly_*`` argument that is set."""
        hp = self.hparams
        base = NSA_CATEGORY_PARAMS.get(str(category or "").lower(), PatchSwapParams())
        width = base.width_bounds
        if hp.anomaly_width_bounds is not None:
            bounds = [tuple(float(v) for v in axis) for axis in hp.anomaly_width_bounds]
            if len(bounds) != 2 or any(len(axis) != 2 for axis in bounds):
                msg = f"anomaly_width_bounds must be [[min_h, max_h], [min_w, max_w]], got {hp.anomaly_width_bounds}"
                raise InvalidArgumentError(msg)
            width = (bounds[0], bounds[1])
        background = base.skip_background
        if hp.anomaly_skip_background is not None:
            values = [float(v) for v in hp.anomaly_skip_background]
            if len(values) not in (0, 2):
                msg = f"anomaly_skip_background must be [brightness, threshold] or [], got {values}"
                raise InvalidArgumentError(msg)
            background = tuple(values) if values else None
        params = PatchSwapParams(
            width_bounds=width,
            num_patches=base.num_patches if hp.anomaly_num_patches is None else int(hp.anomaly_num_patches),
            min_object_pct=base.min_object_pct if hp.anomaly_min_object_pct is None else hp.anomaly_min_object_pct,
            min_overlap_pct=base.min_overlap_pct if hp.anomaly_min_overlap_pct is None else hp.anomaly_min_overlap_pct,
            skip_background=background,
        )
        PatchSwapAnomaly(params)  # validates
        return params

    def training_samples(self, images: list[torch.Tensor], count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` NSA patch-swap pseudo-anomalies of the shots (the category's settings, seeded like a fit)."""
        anomaly = PatchSwapAnomaly(self.patch_swap_params(self.fit_category))
        rng = np.random.default_rng(self.train_seed)
        samples, masks = zip(*(anomaly(images[i % len(images)], rng) for i in range(count)), strict=True)
        return torch.stack(samples), torch.stack(masks).float().reshape(count, 1, *samples[0].shape[-2:])

    # ------------------------------------------------------------------ fit lifecycle
    def prepare_fit(self, images: list[torch.Tensor]) -> FitPlan:
        """Freeze the prototypes on the shots and set up NSA; one pool index per step (pairs are drawn)."""
        params = self.patch_swap_params(self.fit_category)
        self._anomaly = PatchSwapAnomaly(params)
        self._rng = np.random.default_rng(self.train_seed)
        self._shots = images
        if not bool(self.model.prototypes_ready):
            self.model.prepare(images)
        steps = max(1, len(images) // int(self.hparams.batch_size))
        logger.info("PCSNet: %d shots, %d step(s) per epoch, NSA %s", len(images), steps, params)
        return FitPlan(pool_size=steps, batch_size=1)

    def finish_fit(self) -> None:
        """With ``anomaly_map="cas+prototype"``: the branch maps' statistics on the shots (after training)."""
        if self.model.anomaly_map == "cas" or self._shots is None:
            return
        self.model.fit_map_statistics(self._shots)
        logger.info("PCSNet: map statistics on %d shot(s): %s", len(self._shots), self.model.map_statistics.tolist())

    def release_fit(self) -> None:
        """Free the shots."""
        self._shots = None

    # ------------------------------------------------------------------ training
    def _jitter(self, image: torch.Tensor) -> torch.Tensor:
        """The augmented copy of a single shot: random brightness and contrast within ``±pair_jitter``."""
        amount = float(self.hparams.pair_jitter)
        brightness, contrast = 1.0 + self._rng.uniform(-amount, amount, size=2)
        mean = image.mean()
        return ((image - mean) * contrast + mean * brightness).clamp(0, 1)

    def _draw_pairs(self) -> torch.Tensor:
        """``batch_size`` normal images; at ``k=1`` each pair is the shot and a jittered copy of it."""
        shots = self._shots
        size = int(self.hparams.batch_size)
        if len(shots) == 1:
            images = [shots[0] if i % 2 == 0 else self._jitter(shots[0]) for i in range(size)]
        else:
            order = []
            while len(order) < size:
                order.extend(self._rng.permutation(len(shots)).tolist())
            images = [shots[i] for i in order[:size]]
        return torch.stack(images)

    def training_step(self, batch: PoolBatch, *args, **kwargs) -> STEP_OUTPUT:
        """One step on ``batch_size`` normal images, their NSA versions and the mixed pairs."""
        del batch, args, kwargs
        self.require_fit_state(self._shots is not None)
        model, loss_fn = self.model, self.loss
        normal = self._draw_pairs()
        augmented, masks = zip(*(self._anomaly(image, self._rng) for image in normal), strict=True)
        augmented = torch.stack(augmented).to(self.device)
        masks = torch.stack(masks).to(self.device)
        normal = normal.to(self.device)
        n = len(normal)

        descriptors = model.describe(torch.cat([normal, augmented]))
        distances = model.distances(descriptors)
        nearest = model.nearest(distances, max(model.num_nearest, loss_fn.neighbors))
        grid = model.grid_size
        grid_masks = (F.interpolate(masks, size=(grid, grid), mode="area") >= 0.5).float().flatten(1)

        # one image of every pair is replaced by its pseudo-anomalous version
        choice = torch.as_tensor(self._rng.integers(0, 2, size=n // 2), device=self.device)
        anomalous = torch.zeros(n // 2, 2, device=self.device)
        anomalous[torch.arange(n // 2, device=self.device), choice] = 1.0
        anomalous = anomalous.flatten()
        pick = anomalous.bool()
        mix_descriptors = torch.where(pick.view(-1, 1, 1, 1), descriptors[n:], descriptors[:n])
        mix_nearest = torch.where(pick.view(-1, 1, 1), nearest[n:], nearest[:n])
        mix_masks = masks * anomalous.view(-1, 1, 1, 1)

        radius = model.radius
        terms = {
            "nfc": loss_fn.compactness(nearest[:n], radius),
            "afs": loss_fn.separation(nearest[n:], distances[n:], grid_masks, radius),
            "pdc": loss_fn.disparity(mix_nearest, anomalous),
        }
        if model.cas is not None:
            logits = model.segment(mix_descriptors, mix_nearest, masks.shape[-2:])
            terms["seg"] = loss_fn.segmentation(logits, mix_masks)
        loss = loss_fn.weighted(terms)
        self.log_losses(loss, {f"train_{name}_loss": value for name, value in terms.items()}, n)
        return {"loss": loss}
