"""DFD: Dual-path Frequency Discriminators for few-shot anomaly detection, as an Anomalib model.

Paper: Bai et al., "Dual-path Frequency Discriminators for Few-shot Anomaly Detection", arXiv 2403.04151.
Reference code: https://github.com/yuhbai/DFD. This is a clean-room re-implementation; see README.md for
the protocol, measured results and every deviation from the original.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from anomalib.models.components import AnomalibModule
from lightning.pytorch.utilities.types import STEP_OUTPUT

from anomalib_fewshot.components.anomalies import (
    PerlinImageAnomaly,
    foreground_mask,
    gaussian_feature_noise,
    random_rotation,
    resolve_foreground,
)
from anomalib_fewshot.components.lifecycle.arguments import select_arguments
from anomalib_fewshot.components.lifecycle.lightning import FitPlan, ShotModel
from anomalib_fewshot.components.lifecycle.pool import PoolBatch
from anomalib_fewshot.models.dfd.loss import DfdLoss
from anomalib_fewshot.models.dfd.pool import FeaturePool, cache_features, cache_plan
from anomalib_fewshot.models.dfd.torch_model import DfdModel

logger = logging.getLogger(__name__)

#: DfdLoss's parameters named differently in the constructor (``{loss parameter: constructor argument}``).
_LOSS_ARGUMENTS = {
    "gaussian_weight": "gaussian_loss_weight",
    "perlin_weight": "perlin_loss_weight",
    "similarity_weight": "similarity_loss_weight",
    "similarity": "similarity_loss",
}


class Dfd(ShotModel, AnomalibModule):
    """DFD few-shot anomaly detection model.

    Trains, per category, a feature adaptor and two discriminators on ``k_shot`` normal images: every shot
    is augmented ``samples_per_shot`` times (rotation and DRAEM-style Perlin pseudo-anomalies), split into
    low- and high-frequency images, and passed through a frozen backbone once (features are cached). The
    Gaussian discriminator separates adapted features from noisy ones; the Perlin discriminator (a 1-block
    ViT) segments the pseudo-anomalies. At test time both maps are smoothed, normalised with statistics of
    the training pool, and averaged.

    Args:
        backbone: backbone name; ``"wide_resnet50_2.tv_in1k"`` (paper) or ``"tf_efficientnet_lite0"`` (lite).
        layers: feature layers (``layer2``, ``layer3`` for WRN-50; ``blocks.2``, ``blocks.4`` for lite0).
        k_shot: number of normal training images; ``None`` uses all.
        image_size: square model input size (multiple of 8).
        patch_size: local aggregation neighbourhood.
        pretrain_embed_dim: per-level dimension of the aggregation.
        target_embed_dim: token dimension of adaptor and discriminators.
        gaussian_hidden_dim: hidden width of the Gaussian discriminator.
        perlin_num_heads: heads of the Perlin ViT block.
        perlin_depth: ViT blocks in the Perlin discriminator.
        perlin_mlp_ratio: ViT MLP ratio.
        perlin_head: ``"vit"`` (paper) or ``"mlp"`` (Table 5 ablation).
        perlin_init: Perlin discriminator initialisation: ``"code"`` (the official code: PyTorch defaults for its
            linear layers, CLS token ``N(0, 1e-6)``) or ``"xavier"`` (Xavier-normal linear layers, CLS
            trunc-normal(0.02); ``dfd_lite``'s setting, see the README's Deviations).
        frequency_paths: ``"low_high"`` (MFIC), ``"low"``, ``"high"`` or ``"full"`` (no MFIC).
        bgr_input: feed BGR channel order like the reference code.
        use_gaussian_discriminator: train/use the Gaussian discriminator.
        use_perlin_discriminator: train/use the Perlin discriminator.
        use_similarity_loss: add the feature similarity loss.
        image_anomalies: generate Perlin image pseudo-anomalies (else the pool has normal images only).
        feature_anomalies: add Gaussian-noise feature pseudo-anomalies for the Gaussian discriminator.
        augment_rotation: rotate every pool sample by U(−90°, 90°) ("DA" in the paper's ablation).
        anomaly_prob: probability that a pool sample gets a pseudo-anomaly (code: 0.8 MVTec, 0.7 VisA).
        anomaly_source_path: texture folder for pseudo-anomalies (DTD ``images/``); ``None`` = Perlin texture.
        foreground: restrict anomalies to the object: ``"auto"`` (MVTec category table), ``"none"``,
            ``"bright"``, ``"dark"``.
        noise_std: standard deviation of the feature noise (absolute, or relative to the tokens' RMS: ``noise_scale``).
        noise_scale: ``"absolute"`` (code: ``ε ~ N(0, noise_std²)`` whatever the token scale) or ``"rms"``
            (``noise_std`` times the root mean square of the adapted normal tokens of each batch, detached: the same
            relative perturbation for any backbone; tried for the lite profile and not adopted:
            ``docs/benchmarks/dev/dfd/noise_scale.md``).
        margin: truncation margin θ (code 0.5, paper 0.8).
        gaussian_loss_weight: λ of the Gaussian loss.
        perlin_loss_weight: λ of the Perlin loss (paper MVTec: 2).
        similarity_loss_weight: λ of the similarity loss (paper MVTec: 0.02).
        similarity_loss: ``"cosine"`` (code) or ``"one_minus_cosine"`` (paper text).
        samples_per_shot: augmented samples per shot in the pool.
        epochs: training epochs (one epoch = pool size / batch size steps).
        batch_size: training batch size (the model owns it; the datamodule's is not used for training).
        adaptor_lr: Adam learning rate of the adaptor.
        gaussian_lr: Adam learning rate of the Gaussian discriminator.
        perlin_lr: Adam learning rate of the Perlin discriminator.
        discriminator_weight_decay: weight decay of both discriminators.
        lr_min: cosine schedule floor of the discriminators.
        lr_t_max: cosine period in epochs (``None``: ``epochs − 4``, the code's ``(meta_epochs − 1)·4``).
        smoothing_sigma: Gaussian smoothing of the maps.
        perlin_weight: weight of the Perlin discriminator in the fused score and map (``0.5``: the code's average of
            the two); inference only, see :class:`DfdModel`.
        cache_dtype: ``"auto"`` (float16 when the cache would exceed 1 GiB), ``"float32"`` or ``"float16"``.
        cache_stage: what the pool caches per sample: ``"backbone"`` outputs, ``"aggregated"`` tokens (after the
            frozen local aggregation: identical results, no aggregation per step, up to 2x the memory) or
            ``"auto"`` (aggregated when that cache stays under 1 GiB in float32, else backbone outputs).
        **kwargs: the arguments of :class:`~anomalib_fewshot.components.lifecycle.lightning.ShotModel`.

    Example:
        >>> from anomalib_fewshot.models import Dfd
        >>> from anomalib.data import MVTecAD
        >>> from anomalib.engine import Engine
        >>> model = Dfd(backbone="tf_efficientnet_lite0", layers=("blocks.2", "blocks.4"), k_shot=1)
        >>> Engine().train(model, datamodule=MVTecAD(category="bottle"))  # doctest: +SKIP

    """

    positive_arguments = ("samples_per_shot", "epochs", "batch_size")

    def __init__(
        self,
        backbone: str = "wide_resnet50_2.tv_in1k",
        layers: Sequence[str] = ("layer2", "layer3"),
        k_shot: int | None = 1,
        image_size: int = 256,
        patch_size: int = 3,
        pretrain_embed_dim: int = 1536,
        target_embed_dim: int = 1536,
        gaussian_hidden_dim: int = 1024,
        perlin_num_heads: int = 16,
        perlin_depth: int = 1,
        perlin_mlp_ratio: float = 4.0,
        perlin_head: Literal["vit", "mlp"] = "vit",
        perlin_init: Literal["code", "xavier"] = "code",
        frequency_paths: Literal["low_high", "low", "high", "full"] = "low_high",
        bgr_input: bool = True,
        use_gaussian_discriminator: bool = True,
        use_perlin_discriminator: bool = True,
        use_similarity_loss: bool = True,
        image_anomalies: bool = True,
        feature_anomalies: bool = True,
        augment_rotation: bool = True,
        anomaly_prob: float = 0.8,
        anomaly_source_path: str | None = None,
        foreground: Literal["auto", "none", "bright", "dark"] = "auto",
        noise_std: float = 0.015,
        noise_scale: Literal["absolute", "rms"] = "absolute",
        margin: float = 0.5,
        gaussian_loss_weight: float = 1.0,
        perlin_loss_weight: float = 1.0,
        similarity_loss_weight: float = 1.0,
        similarity_loss: Literal["cosine", "one_minus_cosine"] = "cosine",
        samples_per_shot: int = 80,
        epochs: int = 80,
        batch_size: int = 8,
        adaptor_lr: float = 5e-4,
        gaussian_lr: float = 2e-4,
        perlin_lr: float = 1e-4,
        discriminator_weight_decay: float = 1e-5,
        lr_min: float = 4e-5,
        lr_t_max: int | None = None,
        smoothing_sigma: float = 4.0,
        perlin_weight: float = 0.5,
        cache_dtype: Literal["auto", "float32", "float16"] = "auto",
        cache_stage: Literal["auto", "backbone", "aggregated"] = "auto",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        resolve_foreground(foreground, None)  # validates the value
        self.model = DfdModel(**select_arguments(DfdModel.__init__, self.hparams))
        self.loss = DfdLoss(**select_arguments(DfdLoss.__init__, self.hparams, _LOSS_ARGUMENTS))
        # Validates the anomaly arguments now rather than when fitting starts.
        self._anomaly = PerlinImageAnomaly(anomaly_source_path, probability=anomaly_prob)
        self._pool: FeaturePool | None = None

    # ------------------------------------------------------------------ anomalib contract

    def configure_optimizers(self) -> dict[str, Any]:
        """One Adam with the reference code's groups; cosine decay on the discriminator groups per epoch."""
        hp = self.hparams
        groups = [{"params": self.model.adaptor.parameters(), "lr": hp.adaptor_lr, "weight_decay": 0.0}]
        if self.model.gaussian is not None:
            groups.append(
                {
                    "params": self.model.gaussian.parameters(),
                    "lr": hp.gaussian_lr,
                    "weight_decay": hp.discriminator_weight_decay,
                }
            )
        if self.model.perlin is not None:
            groups.append(
                {
                    "params": self.model.perlin.parameters(),
                    "lr": hp.perlin_lr,
                    "weight_decay": hp.discriminator_weight_decay,
                }
            )
        optimizer = torch.optim.Adam(groups)
        t_max = hp.lr_t_max if hp.lr_t_max is not None else max(1, hp.epochs - 4)
        lambdas = [lambda _epoch: 1.0] + [_cosine_factor(group["lr"], hp.lr_min, t_max) for group in groups[1:]]
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    # ------------------------------------------------------------------ fit lifecycle
    def prepare_fit(self, images: list[torch.Tensor]) -> FitPlan:
        """Build the augmented pool (features cached once); one epoch = ``len(pool)`` draws with replacement."""
        self._pool = self._build_pool(images)
        return FitPlan(pool_size=len(self._pool), batch_size=int(self.hparams.batch_size))

    def release_fit(self) -> None:
        """Free the pool."""
        self._pool = None

    def _pool_images(
        self, images: list[torch.Tensor]
    ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[torch.Tensor], list[torch.Tensor]]:
        """The pool's ``(normal, anomalous)`` image pairs, masks and labels (seeded by ``train_seed``)."""
        hp = self.hparams
        fg_mode = resolve_foreground(hp.foreground, self.fit_category)
        fill = "corner" if fg_mode != "none" else "zero"
        samples, masks, labels = [], [], []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.train_seed)
            for image in images:
                for _ in range(hp.samples_per_shot):
                    normal = random_rotation(image, fill=fill) if hp.augment_rotation else image
                    if hp.image_anomalies:
                        fg = foreground_mask(normal, fg_mode) if fg_mode != "none" else None
                        anomalous, mask, label = self._anomaly(normal, fg)
                    else:
                        anomalous, mask, label = normal, torch.zeros_like(normal[:1]), torch.tensor(0.0)
                    samples.append((normal, anomalous))
                    masks.append(mask.round().to(torch.uint8))
                    labels.append(label)
        return samples, masks, labels

    def training_samples(self, images: list[torch.Tensor], count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` pool images (rotated shots, most with a Perlin pseudo-anomaly), every shot in turn, and masks.

        The Gaussian discriminator's feature noise has no image form and is not shown.
        """
        samples, masks, _ = self._pool_images(images)
        per_shot = int(self.hparams.samples_per_shot)  # the pool is laid out shot by shot: show every shot's
        order = [shot * per_shot + j for j in range(per_shot) for shot in range(len(images))]
        order = [order[i % len(order)] for i in range(count)]
        return torch.stack([samples[i][1] for i in order]), torch.stack([masks[i] for i in order]).float()

    @torch.no_grad()
    def _build_pool(self, images: list[torch.Tensor]) -> FeaturePool:
        hp = self.hparams
        device = self.device
        was_training = self.model.training
        self.model.eval()
        samples, masks, labels = self._pool_images(images)
        n = len(samples)
        labels_t = torch.stack(labels).float()
        anomalous_idx = torch.nonzero(labels_t > 0).flatten()
        anomalous_row = torch.full((n,), -1, dtype=torch.long)
        anomalous_row[anomalous_idx] = torch.arange(len(anomalous_idx))
        normal_feats, anomalous_feats, aggregated = cache_features(
            self.model,
            [s[0] for s in samples],
            [samples[i][1] for i in anomalous_idx.tolist()],
            device,
            hp.cache_stage,
            hp.cache_dtype,
        )
        pool = FeaturePool(normal_feats, anomalous_feats, anomalous_row, torch.stack(masks), labels_t, aggregated)
        self.model.train(was_training)
        logger.info(
            "DFD pool: %d samples (%d shots x %d), %d with pseudo-anomalies, feature cache %.1f MB (%s, %s)",
            n,
            len(images),
            hp.samples_per_shot,
            int(pool.labels.sum()),
            pool.nbytes() / 2**20,
            normal_feats[0].dtype,
            "aggregated tokens" if aggregated else "backbone features",
        )
        return pool

    def estimate_cache_bytes(self, k_shot: int) -> int:
        """Expected size of the training-pool cache for ``k_shot`` shots (features, masks and labels).

        Uses the expected share of pseudo-anomalous samples (``anomaly_prob``); runs one backbone pass on a
        blank image and needs no weights.
        """
        hp = self.hparams
        n = k_shot * hp.samples_per_shot
        n_anomalous = round(n * hp.anomaly_prob) if hp.image_anomalies else 0
        probe = self.model.backbone_features(torch.zeros(1, 3, hp.image_size, hp.image_size, device=self.device))
        _, _, feature_bytes = cache_plan(self.model, probe, n + n_anomalous, hp.cache_stage, hp.cache_dtype)
        return feature_bytes + n * hp.image_size**2 + n * 12

    # ------------------------------------------------------------------ training
    def _pool_tokens(self, kind: str, indices: torch.Tensor) -> torch.Tensor:
        """Adapted tokens ``(P·b, N, D)`` (path-major) of the ``kind`` images of pool ``indices``."""
        feats = []
        for level in self._pool.cached(kind, indices):
            f = level.to(self.device, torch.float32)  # (b, P, ...)
            feats.append(f.transpose(0, 1).reshape(-1, *f.shape[2:]))
        if self._pool.aggregated:
            return self.model.adaptor(feats[0])
        return self.model.embed(feats)

    def training_step(self, batch: PoolBatch, *args, **kwargs) -> STEP_OUTPUT:
        """One step on a batch of pool samples; losses summed over the frequency paths."""
        del args, kwargs
        self.require_fit_state(self._pool is not None)
        hp = self.hparams
        indices = batch.indices.cpu()
        pool = self._pool
        masks = pool.masks[indices].to(self.device, torch.float32)
        labels = pool.labels[indices].to(self.device)
        normal = self._pool_tokens("normal", indices)
        anomalous = self._pool_tokens("anomalous", indices)
        num_paths, b = self.model.num_paths, len(indices)
        grid = self.model.grid
        token_mask = None
        if hp.use_similarity_loss:
            token_mask = F.adaptive_max_pool2d(masks, grid).flatten(1) > 0.5
        terms: dict[str, torch.Tensor] = {}
        for path in range(num_paths):
            q_n = normal[path * b : (path + 1) * b]
            q_a = anomalous[path * b : (path + 1) * b]
            if self.model.gaussian is not None:
                if hp.feature_anomalies:
                    logits = self.model.gaussian(torch.cat([q_n, gaussian_feature_noise(q_n, self._noise_std(q_n))]))
                    term = self.loss.gaussian(logits[:b], logits[b:])
                else:
                    term = self.loss.gaussian_weight * F.relu(hp.margin - self.model.gaussian(q_n)).mean()
                terms["gaussian"] = terms.get("gaussian", 0) + term
            if self.model.perlin is not None:
                logits = self.model.perlin(q_a).reshape(b, 1, *grid)
                logit_maps = F.interpolate(logits, size=masks.shape[-2:], mode="bilinear", align_corners=False)
                terms["perlin"] = terms.get("perlin", 0) + self.loss.perlin(logit_maps, masks, labels)
            if token_mask is not None:
                terms["similarity"] = terms.get("similarity", 0) + self.loss.sim(q_n, q_a, token_mask)
        loss = sum(terms.values())
        self.log_losses(loss, {f"train_{name}_loss": value for name, value in terms.items()}, b)
        return {"loss": loss}

    def _noise_std(self, tokens: torch.Tensor) -> float | torch.Tensor:
        """The feature-noise standard deviation for ``tokens``: ``noise_std``, times their RMS when relative."""
        if self.hparams.noise_scale == "rms":
            return self.hparams.noise_std * tokens.detach().pow(2).mean().sqrt()
        return self.hparams.noise_std

    # ------------------------------------------------------------------ normalisation statistics
    def finish_fit(self) -> None:
        """After training (and before anomalib fits thresholds): fit score statistics on the training pool."""
        self._fit_normalizers()

    def _fit_normalizers(self, chunk: int = 16) -> None:
        pool = self._pool
        size = tuple(pool.masks.shape[-2:])
        anomalous = torch.nonzero(pool.anomalous_row >= 0).flatten()
        batches = (
            self._pool_tokens(kind, selection[start : start + chunk])
            for kind, selection in (("normal", torch.arange(len(pool))), ("anomalous", anomalous))
            for start in range(0, len(selection), chunk)
        )
        count = self.model.fit_normalizers(batches, size)
        logger.info("DFD: fitted score normalisation on %d training-pool images", count)


def _cosine_factor(base_lr: float, lr_min: float, t_max: int) -> Any:
    """LambdaLR factor reproducing ``CosineAnnealingLR(T_max, eta_min)`` for a group with ``base_lr``."""

    def factor(epoch: int) -> float:
        return (lr_min + (base_lr - lr_min) * (1 + math.cos(math.pi * epoch / t_max)) / 2) / base_lr

    return factor
