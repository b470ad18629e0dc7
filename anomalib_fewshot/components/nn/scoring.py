"""Anomaly-map smoothing and score normalisation/fusion statistics stored as buffers."""

from __future__ import annotations

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
