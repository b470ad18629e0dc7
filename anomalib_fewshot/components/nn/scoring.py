"""Anomaly-map smoothing and score normalisation/fusion statistics stored as buffers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from anomalib_fewshot.components.nn.ops import symmetric_pad2d
from anomalib_fewshot.errors import InvalidArgumentError


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """The normalised 1-D Gaussian of ``scipy.ndimage.gaussian_filter`` (radius ``int(truncate * sigma + 0.5)``)."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return (kernel / kernel.sum()).float()


class GaussianSmoothing(nn.Module):
    """Separable Gaussian blur equal to ``scipy.ndimage.gaussian_filter(sigma, truncate=4, mode="reflect")``.

    Operates on ``(B, C, H, W)``; export-safe (two depthwise convolutions and a flip-based symmetric pad).
    ``sigma <= 0`` turns it into the identity.
    """

    def __init__(self, sigma: float = 4.0, truncate: float = 4.0) -> None:
        super().__init__()
        self.sigma = float(sigma)
        kernel = gaussian_kernel1d(sigma, truncate) if sigma > 0 else torch.ones(1)
        self.radius = (kernel.numel() - 1) // 2
        self.register_buffer("kernel", kernel, persistent=False)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """Blur each channel of ``maps`` independently."""
        if self.radius == 0:
            return maps
        channels = maps.shape[1]
        padded = symmetric_pad2d(maps, self.radius)
        kernel_h = self.kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
        kernel_v = self.kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
        blurred = F.conv2d(padded, kernel_h, groups=channels)
        return F.conv2d(blurred, kernel_v, groups=channels)


class BranchNormalizer(nn.Module):
    """Per-branch normalisation of image scores and anomaly maps, fitted on training data only.

    Image scores use min–max over the fitting set. Anomaly maps use the global affine map ``a·S − b`` with
    ``a = mean_i 1/(max_i − min_i)`` and ``b = mean_i min_i/(max_i − min_i)`` over the fitting images ``i``
    (what DFD's reference code computes, there over the *test* set). Statistics live in buffers, so they are
    saved in checkpoints and become constants in the exported graph. Before :meth:`fit` the normaliser is
    the identity.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("score_min", torch.tensor(0.0))
        self.register_buffer("score_max", torch.tensor(1.0))
        self.register_buffer("map_scale", torch.tensor(1.0))
        self.register_buffer("map_shift", torch.tensor(0.0))

    @torch.no_grad()
    def fit(self, scores: torch.Tensor, map_mins: torch.Tensor, map_maxs: torch.Tensor, eps: float = 1e-8) -> None:
        """Fit from image ``scores`` ``(N,)`` and the per-image minima/maxima ``(N,)`` of the fitting maps."""
        if scores.numel() == 0:
            msg = "cannot fit score normalisation on an empty set"
            raise InvalidArgumentError(msg)
        map_mins, map_maxs = map_mins.double(), map_maxs.double()
        span = (map_maxs - map_mins).clamp_min(eps)
        self.map_scale.copy_((1.0 / span).mean())
        self.map_shift.copy_((map_mins / span).mean())
        self.score_min.copy_(scores.min())
        self.score_max.copy_(torch.maximum(scores.max(), scores.min() + eps))

    def normalize_score(self, score: torch.Tensor) -> torch.Tensor:
        """Min–max normalise image scores."""
        return (score - self.score_min) / (self.score_max - self.score_min)

    def normalize_map(self, anomaly_map: torch.Tensor) -> torch.Tensor:
        """Apply the fitted global affine map."""
        return anomaly_map * self.map_scale - self.map_shift


#: The image-score rules of :class:`ImageScore`.
ImageScoreRule = Literal["model", "max", "top1", "resid", "z"]
IMAGE_SCORES: tuple[str, ...] = get_args(ImageScoreRule)


class ImageScore(nn.Module):
    """The image score a model ships, from its own score or from its anomaly map (one rule, fixed at construction).

    - ``"model"``: the model's own image score, unchanged (every paper profile);
    - ``"max"``: the map's maximum;
    - ``"top1"``: the mean of the map's highest ``top_share`` of pixels (a single hot pixel weighs less);
    - ``"resid"``: the maximum of the map less the per-pixel mean map of the shots' normal views (what the shots'
      own variation explains on average is taken out);
    - ``"z"``: the maximum of the map standardised per pixel by the normal views' mean and standard deviation (the
      deviation floored at ``std_floor`` of its mean, so a pixel that never varied cannot dominate).

    ``resid`` and ``z`` keep their statistics in buffers (fitted by :meth:`fit` from normal views' maps at the end of
    training, before the thresholds are calibrated on scores computed this way); the other rules have no state, so
    checkpoints written before this class existed load unchanged. Every rule is a static branch: export-safe.
    """

    def __init__(self, rule: str = "model", top_share: float = 0.01, std_floor: float = 0.1) -> None:
        super().__init__()
        if rule not in IMAGE_SCORES:
            msg = f"image_score must be one of {IMAGE_SCORES}, got {rule!r}"
            raise InvalidArgumentError(msg)
        self.rule = rule
        self.top_share = float(top_share)
        self.std_floor = float(std_floor)
        if self.needs_statistics:
            self.register_buffer("normal_mean", torch.empty(0))
            self.register_buffer("normal_scale", torch.empty(0))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        """Take the saved statistics' shape (they are empty until fitted), then load as usual."""
        for name in ("normal_mean", "normal_scale"):
            if prefix + name in state_dict and name in self._buffers:
                self._buffers[name] = torch.empty_like(state_dict[prefix + name])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @contextlib.contextmanager
    def bypassed(self) -> Iterator[None]:
        """Score with the model's own rule inside the block (the maps that :meth:`fit` reads are computed so)."""
        rule = self.rule
        self.rule = "model"
        try:
            yield
        finally:
            self.rule = rule

    @property
    def needs_statistics(self) -> bool:
        """Whether the rule reads normal-view statistics (:meth:`fit` before scoring)."""
        return self.rule in ("resid", "z")

    @torch.no_grad()
    def fit(self, normal_maps: torch.Tensor) -> None:
        """Per-pixel statistics from the maps ``(N, [1,] H, W)`` of normal views (no-op for stateless rules)."""
        if not self.needs_statistics:
            return
        maps = normal_maps.reshape(len(normal_maps), *normal_maps.shape[-2:]).float()
        if len(maps) < 2:
            msg = f"image_score {self.rule!r} needs the maps of at least 2 normal views, got {len(maps)}"
            raise InvalidArgumentError(msg)
        std = maps.std(0)
        floor = self.std_floor * float(std.mean()) + 1e-12
        scale = std.clamp_min(floor) if self.rule == "z" else torch.ones_like(std)
        device = self.normal_mean.device
        self.normal_mean = maps.mean(0)[None, None].to(device)
        self.normal_scale = scale[None, None].to(device)

    def forward(self, score: torch.Tensor, anomaly_map: torch.Tensor) -> torch.Tensor:
        """Image scores ``(B,)`` from the model's ``score`` ``(B,)`` and ``anomaly_map`` ``(B, 1, H, W)``."""
        if self.rule == "model":
            return score
        if self.needs_statistics:
            if self.normal_mean.numel() == 0:
                msg = f"image_score {self.rule!r} has no normal-view statistics yet: fit or calibrate the model first"
                raise InvalidArgumentError(msg)
            anomaly_map = (anomaly_map - self.normal_mean) / self.normal_scale
        flat = anomaly_map.flatten(1)
        if self.rule == "top1":
            count = max(1, round(self.top_share * flat.shape[1]))
            return flat.topk(count, dim=1).values.mean(1)
        return flat.amax(1)
