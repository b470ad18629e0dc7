"""PCSNet torch model: frozen backbone, prototypical feature adaption (PFA) and context-aware segmentation (CAS).

Pure torch (no Lightning). Everything fitted (descriptor, radius, CAS weights, prototypes) lives in parameters or
buffers, pooling is done with precomputed matrices, and the eval forward has no data-dependent control flow, so it
exports to ONNX/OpenVINO.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from anomalib.data import InferenceBatch
from torch import nn

from anomalib_fewshot.components.nn.backbones import Backbone
from anomalib_fewshot.components.nn.scoring import GaussianSmoothing, ImageScore, ImageScoreRule
from anomalib_fewshot.errors import InvalidArgumentError
from anomalib_fewshot.models.pcsnet.layers import (
    ContextAwareSegmentation,
    PrototypeDescriptor,
    prototype_distances,
    prototype_sq_distances,
)

#: MVTec AD / MPDD categories for which the reference code uses the reduced descriptor.
ROTATION_OBJECTS = ("grid", "screw", "bracket_black", "bracket_brown", "tubes")

#: ``feature_activation``: the reference code's ``leaky_relu`` on every backbone level (a no-op on post-ReLU
#: features such as WRN-50's), or none.
FeatureActivation = Literal["leaky_relu", "none"]
#: ``anomaly_map``: the CAS output (the paper), or the CAS output plus the nearest-prototype distance, each
#: standardised by its mean and standard deviation on the shots (see :meth:`PcsnetModel.fit_map_statistics`).
AnomalyMap = Literal["cas", "cas+prototype"]


class PcsnetModel(nn.Module):
    """PCSNet (Jiang et al., IEEE TNNLS 2024): PFA descriptor with frozen prototypes, and the CAS sub-network.

    Input: ``(B, 3, S, S)`` RGB images in ``[0, 1]`` (already resized/cropped to ``image_size``); the model
    normalises with the backbone's statistics.

    Eval output: :class:`~anomalib.data.InferenceBatch` with the CAS map (Gaussian-smoothed) and its maximum as
    the image score; with ``anomaly_map="cas+prototype"`` the map is the standardised CAS map plus the
    standardised nearest-prototype distance map (statistics of the shots, buffers set after training).

    Args:
        backbone: backbone name (see :class:`~anomalib_fewshot.components.nn.backbones.Backbone`).
        layers: three feature layers (``layer1``–``layer3`` of WRN-50 in the paper).
        pre_trained: load ImageNet weights when fitting starts.
        weights_path: local backbone weights file.
        image_size: square input size.
        grid_size: side of the descriptor grid (64 in the paper); there is one prototype per grid position.
        reduced_descriptor: the reduced descriptor used for rotation objects (see :data:`ROTATION_OBJECTS`).
        use_coordinates: CoordConv coordinate channels in the descriptor (ablation switch).
        use_cas: build the CAS; without it (ablation: PFA only) the map is the nearest-prototype distance.
        feature_activation: ``"leaky_relu"`` on every backbone level (reference code) or ``"none"``.
        anomaly_map: ``"cas"`` (paper) or ``"cas+prototype"`` (needs the CAS).
        prototype_sets: 1 (paper): the prototypes are the shots' mean descriptor; ``n`` > 1: every one of ``n``
            shots' descriptors is a prototype (``n·g²`` prototypes; a fit must then use exactly ``n`` shots).
        num_nearest: nearest prototypes kept per position as the CAS distance map (200 in the paper).
        guide_channels: leading descriptor channels passed to the CAS as guide features (896 in the paper).
        cas_dim: working width of the CAS (896).
        pyramid_bins: CAS pyramid bins (60, 30, 15, 8).
        cas_dropout: dropout in the CAS classifier.
        radius_init: initial value of the learnable radius ``r``.
        smoothing_sigma: Gaussian smoothing of the map (0 disables).
        image_score: the image score shipped (:class:`~anomalib_fewshot.components.nn.scoring.ImageScore`):
            ``"model"`` (the method's own, default), or from the map: ``"max"``, ``"top1"``, ``"resid"``, ``"z"``.

    """

    def __init__(
        self,
        backbone: str = "wide_resnet50_2.tv_in1k",
        layers: Sequence[str] = ("layer1", "layer2", "layer3"),
        pre_trained: bool = True,
        weights_path: str | None = None,
        image_size: int = 224,
        grid_size: int = 64,
        reduced_descriptor: bool = False,
        use_coordinates: bool = True,
        use_cas: bool = True,
        feature_activation: FeatureActivation = "leaky_relu",
        anomaly_map: AnomalyMap = "cas",
        prototype_sets: int = 1,
        num_nearest: int = 200,
        guide_channels: int = 896,
        cas_dim: int = 896,
        pyramid_bins: Sequence[int] = (60, 30, 15, 8),
        cas_dropout: float = 0.1,
        radius_init: float = 1e-5,
        smoothing_sigma: float = 4.0,
        image_score: ImageScoreRule = "model",
    ) -> None:
        super().__init__()
        self.image_score = ImageScore(image_score)
        self.image_size = image_size
        self.grid_size = grid_size
        self.num_nearest = num_nearest
        if anomaly_map != "cas" and not use_cas:
            msg = (
                f"anomaly_map={anomaly_map!r} fuses the CAS output: it needs use_cas=True "
                "(for PFA alone set anomaly_map='cas')"
            )
            raise InvalidArgumentError(msg)
        self.feature_activation = feature_activation
        self.anomaly_map = anomaly_map
        self.backbone = Backbone(backbone, layers, pre_trained=pre_trained, weights_path=weights_path)
        with torch.no_grad():
            probe = self.backbone(torch.zeros(1, 3, image_size, image_size))
        channels = [f.shape[1] for f in probe]
        sizes = [tuple(f.shape[-2:]) for f in probe]
        self.descriptor = PrototypeDescriptor(channels, sizes, grid_size, reduced_descriptor, use_coordinates)
        dim = self.descriptor.out_channels
        if prototype_sets < 1:
            msg = f"prototype_sets must be >= 1, got {prototype_sets}"
            raise InvalidArgumentError(msg)
        self.prototype_sets = prototype_sets
        num_prototypes = prototype_sets * grid_size * grid_size
        if not 1 <= num_nearest <= num_prototypes:
            msg = f"num_nearest must be in [1, prototypes={num_prototypes}], got {num_nearest}"
            raise InvalidArgumentError(msg)
        if not 1 <= guide_channels <= dim:
            msg = f"guide_channels must be in [1, descriptor channels={dim}], got {guide_channels}"
            raise InvalidArgumentError(msg)
        self.guide_channels = guide_channels
        self.radius = nn.Parameter(torch.tensor(float(radius_init)))
        self.register_buffer("prototypes", torch.zeros(num_prototypes, dim))
        self.register_buffer("prototype_sq_norms", torch.zeros(num_prototypes))
        self.register_buffer("prototypes_ready", torch.tensor(False))
        # mean and std of the CAS map and of the nearest-prototype map on the shots (anomaly_map="cas+prototype")
        self.register_buffer("map_statistics", torch.tensor([0.0, 1.0, 0.0, 1.0]))
        self.cas = (
            ContextAwareSegmentation(guide_channels, num_nearest, cas_dim, pyramid_bins, grid_size, cas_dropout)
            if use_cas
            else None
        )
        self.smoothing = GaussianSmoothing(smoothing_sigma)

    # ------------------------------------------------------------------ PFA
    def backbone_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Frozen backbone features of ``[0, 1]`` images."""
        with torch.no_grad():
            features = self.backbone(self.backbone.normalize(images))
        if self.feature_activation == "leaky_relu":
            features = [F.leaky_relu(feature) for feature in features]
        return features

    def describe(self, images: torch.Tensor) -> torch.Tensor:
        """Descriptor ``(B, D, g, g)`` of ``[0, 1]`` images."""
        return self.descriptor(self.backbone_features(images))

    @torch.no_grad()
    def set_prototypes(self, descriptors: torch.Tensor) -> None:
        """Freeze the prototypes: the mean descriptor ``(D, g, g)`` (or the mean of ``(N, D, g, g)``).

        With ``prototype_sets`` = n > 1, ``descriptors`` is ``(n, D, g, g)`` and every position of every one is a
        prototype.
        """
        if self.prototype_sets > 1:
            if descriptors.dim() != 4 or len(descriptors) != self.prototype_sets:
                msg = (
                    f"prototype_sets={self.prototype_sets} needs exactly that many shots, got "
                    f"{len(descriptors) if descriptors.dim() == 4 else 1}"
                )
                raise InvalidArgumentError(msg)
            prototypes = descriptors.flatten(2).transpose(1, 2).reshape(-1, descriptors.shape[1]).contiguous()
        else:
            if descriptors.dim() == 4:
                descriptors = descriptors.mean(0)
            prototypes = descriptors.flatten(1).t().contiguous()
        self.prototypes.copy_(prototypes)
        self.prototype_sq_norms.copy_(prototypes.pow(2).sum(-1))
        self.prototypes_ready.fill_(True)

    @torch.no_grad()
    def prepare(self, images: torch.Tensor | Sequence[torch.Tensor], chunk: int = 8) -> None:
        """The state a fit computes before training: prototypes = mean descriptor of ``images`` (or all of them).

        As the reference code, under the *untrained* descriptor in training mode (the freshly built modules);
        ``images`` are ``(3, S, S)`` floats in ``[0, 1]`` (a batch or a list), summed in chunks of ``chunk``.
        """
        was_training = self.training
        self.train()
        device = self.prototypes.device
        total, kept = None, []
        for start in range(0, len(images), chunk):
            batch = images[start : start + chunk]
            batch = (batch if isinstance(batch, torch.Tensor) else torch.stack(list(batch))).to(device)
            descriptors = self.describe(batch)
            if self.prototype_sets > 1:
                kept.append(descriptors)
                continue
            summed = descriptors.sum(0)
            total = summed if total is None else total + summed
        self.set_prototypes(torch.cat(kept) if kept else total / len(images))
        self.train(was_training)

    def distances(self, descriptors: torch.Tensor) -> torch.Tensor:
        """``(B, g·g, M)`` distances of every position to every prototype."""
        return prototype_distances(descriptors, self.prototypes, self.prototype_sq_norms)

    def nearest(self, distances: torch.Tensor, k: int) -> torch.Tensor:
        """The ``k`` smallest distances per position, ascending: ``(B, g·g, k)``."""
        return torch.topk(distances, k, dim=-1, largest=False, sorted=True).values

    def nearest_distances(self, descriptors: torch.Tensor, k: int) -> torch.Tensor:
        """``nearest(distances(descriptors), k)`` with the square root taken after the selection.

        The root is monotone, so selecting on squared distances picks the same values; it is then taken on ``k``
        distances per position instead of all ``M`` (the inference path: 2304 × 2304 roots per image at the lite
        geometry); ``k = 1`` is a minimum. Equal to the two-step form (unit-tested); training keeps the full matrix,
        which its loss needs.
        """
        squared = prototype_sq_distances(descriptors, self.prototypes, self.prototype_sq_norms)
        if k == 1:  # a static choice (k is the model's setting): ReduceMin instead of a TopK in the graph
            return squared.amin(dim=-1, keepdim=True).clamp_min(1e-12).sqrt()
        return self.nearest(squared, k).clamp_min(1e-12).sqrt()

    def distance_map(self, nearest: torch.Tensor) -> torch.Tensor:
        """``(B, g·g, K)`` nearest distances → ``(B, K, g, g)`` CAS input."""
        return nearest.transpose(1, 2).reshape(nearest.shape[0], -1, self.grid_size, self.grid_size)

    # ------------------------------------------------------------------ CAS
    def segment(self, descriptors: torch.Tensor, nearest: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """CAS logits ``(B, 1, *size)`` from descriptors and their ``num_nearest`` nearest distances."""
        guide = descriptors[:, : self.guide_channels]
        return self.cas(guide, self.distance_map(nearest[..., : self.num_nearest]), size)

    def prototype_map(self, nearest: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The PFA-only map: nearest-prototype distance per position, up-sampled to ``size`` ``(B, 1, *size)``."""
        grid_map = nearest[..., :1].transpose(1, 2).reshape(-1, 1, self.grid_size, self.grid_size)
        return F.interpolate(grid_map, size=size, mode="bilinear", align_corners=False)

    def raw_branch_maps(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The CAS map and the nearest-prototype distance map before smoothing, each ``(B, 1, H, W)``."""
        size = tuple(images.shape[-2:])
        descriptors = self.describe(images)
        nearest = self.nearest_distances(descriptors, self.num_nearest)
        return self.segment(descriptors, nearest, size), self.prototype_map(nearest, size)

    def branch_maps(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The smoothed CAS map and the smoothed nearest-prototype distance map, each ``(B, 1, H, W)``."""
        cas, prototype = self.raw_branch_maps(images)
        return self.smoothing(cas), self.smoothing(prototype)

    @torch.no_grad()
    def fit_map_statistics(self, images: Sequence[torch.Tensor], chunk: int = 8) -> None:
        """Store :meth:`branch_statistics` of ``images`` (the shots) in the ``map_statistics`` buffer."""
        self.map_statistics.copy_(self.branch_statistics(images, chunk))

    @torch.no_grad()
    def branch_statistics(self, images: Sequence[torch.Tensor], chunk: int = 8) -> torch.Tensor:
        """``(μ_c, σ_c, μ_p, σ_p)``: mean and standard deviation of both smoothed branch maps over ``images``.

        In eval mode (the previous mode is restored); ``images`` are ``(3, S, S)`` floats in ``[0, 1]`` (a batch or
        a list), scored in chunks of ``chunk``; the deviations are floored at 1e-6.
        """
        was_training = self.training
        self.eval()
        device = self.map_statistics.device
        maps: list[tuple[torch.Tensor, torch.Tensor]] = []
        for start in range(0, len(images), chunk):
            batch = images[start : start + chunk]
            batch = (batch if isinstance(batch, torch.Tensor) else torch.stack(list(batch))).to(device)
            maps.append(self.branch_maps(batch))
        self.train(was_training)
        cas = torch.cat([pair[0] for pair in maps])
        prototype = torch.cat([pair[1] for pair in maps])
        stats = [cas.mean(), cas.std().clamp_min(1e-6), prototype.mean(), prototype.std().clamp_min(1e-6)]
        return torch.stack(stats)

    def fuse(self, cas: torch.Tensor, prototype: torch.Tensor) -> torch.Tensor:
        """Standardised smoothed CAS map plus standardised smoothed prototype map, from the *unsmoothed* maps.

        ``(smooth(c) − μ_c)/σ_c + (smooth(p) − μ_p)/σ_p`` (statistics of the shots' smoothed maps) is computed as
        ``smooth(c/σ_c + p/σ_p) − (μ_c/σ_c + μ_p/σ_p)``: the smoothing is linear and keeps constants, so the two are
        equal, and one smoothing is cheaper. (Smoothing both maps and adding them exported to an OpenVINO graph
        that dropped the CAS term: OpenVINO 2026.4, CPU plugin; the single-smoothing graph exports exactly.)
        """
        stats = self.map_statistics
        return self.smoothing(cas / stats[1] + prototype / stats[3]) - (stats[0] / stats[1] + stats[2] / stats[3])

    def forward(self, images: torch.Tensor) -> torch.Tensor | InferenceBatch:
        """Training mode: descriptors ``(B, D, g, g)``. Eval mode: :class:`InferenceBatch`."""
        if self.training:
            return self.describe(images)
        if self.cas is None:
            size = tuple(images.shape[-2:])
            nearest = self.nearest_distances(self.describe(images), 1)
            anomaly_map = self.smoothing(self.prototype_map(nearest, size))
        elif self.anomaly_map == "cas":
            size = tuple(images.shape[-2:])
            descriptors = self.describe(images)
            nearest = self.nearest_distances(descriptors, self.num_nearest)
            anomaly_map = self.smoothing(self.segment(descriptors, nearest, size))
        else:
            anomaly_map = self.fuse(*self.raw_branch_maps(images))
        score = self.image_score(anomaly_map.amax(dim=(1, 2, 3)), anomaly_map)
        return InferenceBatch(pred_score=score, anomaly_map=anomaly_map)
