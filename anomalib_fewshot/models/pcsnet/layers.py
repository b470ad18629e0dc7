"""PCSNet's building blocks: exact adaptive pooling, CoordConv, the PFA descriptor, the CAS and prototype distances.

Pure torch with static shapes (they export to ONNX/OpenVINO); ``torch_model.PcsnetModel`` assembles them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from anomalib_fewshot.components.nn.ops import adaptive_avg_pool_matrix, pool_last_dim
from anomalib_fewshot.errors import InvalidArgumentError


class AdaptiveAvgPool2dExact(nn.Module):
    """``nn.AdaptiveAvgPool2d(out_size)`` for a fixed input size, as two matmuls with precomputed matrices.

    PyTorch's adaptive pooling with non-divisible sizes (e.g. 64 → 60) does not export to ONNX; the
    averaging windows are fixed for fixed sizes, so they become constant matrices (exact, static).
    """

    def __init__(self, in_size: tuple[int, int], out_size: tuple[int, int]) -> None:
        super().__init__()
        self.out_size = tuple(out_size)
        self.register_buffer("rows", adaptive_avg_pool_matrix(in_size[0], out_size[0]), persistent=False)
        self.register_buffer("cols", adaptive_avg_pool_matrix(in_size[1], out_size[1]), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` → ``(B, C, h, w)``."""
        x = pool_last_dim(x, self.out_size[1], self.cols)
        return pool_last_dim(x.transpose(-1, -2), self.out_size[0], self.rows).transpose(-1, -2)


class CoordConv1x1(nn.Module):
    """CoordConv with a 1×1 kernel: append ``x, y ∈ [−1, 1]`` coordinate channels, then ``Conv2d(C+2 → C_out)``.

    The coordinates are a constant buffer for the fixed feature size (the reference code builds them with
    ``torch.arange(...).cuda()`` on every call). ``coordinates=False`` makes it a plain 1×1 convolution (ablation).
    """

    def __init__(self, in_channels: int, out_channels: int, size: tuple[int, int], coordinates: bool = True) -> None:
        super().__init__()
        height, width = size
        self.coordinates = coordinates
        if coordinates:
            ys = torch.linspace(-1.0, 1.0, height).view(height, 1).expand(height, width)
            xs = torch.linspace(-1.0, 1.0, width).view(1, width).expand(height, width)
            self.register_buffer("coords", torch.stack([xs, ys])[None].clone(), persistent=False)
        self.conv = nn.Conv2d(in_channels + (2 if coordinates else 0), out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` → ``(B, C_out, h, w)``."""
        if self.coordinates:
            x = torch.cat([x, self.coords.expand(x.shape[0], -1, -1, -1)], dim=1)
        return self.conv(x)


def _reduction(channels: int) -> nn.Sequential:
    """``1×1 conv → BN → ReLU → 1×1 conv → BN → ReLU → 1×1 conv`` halving the channels (rotation objects)."""
    half = channels // 2
    return nn.Sequential(
        nn.Conv2d(channels, half, 1, bias=False),
        nn.BatchNorm2d(half),
        nn.ReLU(inplace=True),
        nn.Conv2d(half, half, 1, bias=False),
        nn.BatchNorm2d(half),
        nn.ReLU(inplace=True),
        nn.Conv2d(half, half, 1, bias=False),
    )


class PrototypeDescriptor(nn.Module):
    """The PFA descriptor: per level 3×3 average pooling, [reduction], CoordConv 1×1, bilinear resize, concat.

    Args:
        channels: backbone channels per level.
        sizes: backbone feature sizes per level (for the coordinate buffers).
        grid: side of the common feature grid (64 in the paper).
        reduced: use the reduced (half-width) descriptor of the reference code's rotation objects.
        coordinates: append coordinate channels (CoordConv); ``False`` for a plain 1×1 convolution.

    """

    def __init__(
        self,
        channels: Sequence[int],
        sizes: Sequence[tuple[int, int]],
        grid: int,
        reduced: bool,
        coordinates: bool = True,
    ) -> None:
        super().__init__()
        self.grid = grid
        out_channels = [c // 2 if reduced else c for c in channels]
        self.reduce = nn.ModuleList([_reduction(c) if reduced else nn.Identity() for c in channels])
        self.coord = nn.ModuleList(
            [CoordConv1x1(c, c, size, coordinates) for c, size in zip(out_channels, sizes, strict=True)],
        )
        self.out_channels = sum(out_channels)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Backbone features → descriptor ``(B, D, grid, grid)``."""
        levels = []
        for feature, reduce, coord in zip(features, self.reduce, self.coord, strict=True):
            x = coord(reduce(F.avg_pool2d(feature, 3, stride=1, padding=1)))
            levels.append(F.interpolate(x, size=(self.grid, self.grid), mode="bilinear", align_corners=False))
        return torch.cat(levels, dim=1)


def _conv_relu(in_channels: int, out_channels: int, kernel: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False), nn.ReLU(inplace=True)]


class ContextAwareSegmentation(nn.Module):
    """CAS: PFENet-style feature-enrichment pyramid over guide features and prototype-distance maps.

    For every bin ``b`` (coarse to fine in the order given, 60/30/15/8 in the paper): pool the guide features to
    ``b×b`` (exact, export-safe), resize the distance map to ``b×b``, merge (1×1), add the previous bin's
    features (1×1 ``alpha`` conv, residual), refine (two 3×3, residual) and resize back to the grid; then merge all
    bins (1×1), refine (two 3×3, residual) and classify (3×3, dropout, 1×1) to one channel at the image size.
    The per-bin auxiliary classifiers of the reference code (``inner_cls``, never used by a loss) are left out.

    Args:
        guide_channels: channels of the guide features.
        distance_channels: channels of the distance map (the number of nearest prototypes).
        dim: working width (896 in the paper).
        bins: pyramid bin sizes.
        grid: side of the feature grid.
        dropout: dropout of the classifier.

    """

    def __init__(
        self,
        guide_channels: int,
        distance_channels: int,
        dim: int,
        bins: Sequence[int],
        grid: int,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if not bins or any(not 1 <= b <= grid for b in bins):
            msg = f"pyramid_bins must be non-empty sizes in [1, grid={grid}], got {list(bins)}"
            raise InvalidArgumentError(msg)
        self.bins = [int(b) for b in bins]
        self.grid = grid
        self.pools = nn.ModuleList([AdaptiveAvgPool2dExact((grid, grid), (b, b)) for b in self.bins])
        self.merge = nn.ModuleList(
            [nn.Sequential(*_conv_relu(guide_channels + distance_channels, dim, 1)) for _ in self.bins],
        )
        self.alpha = nn.ModuleList([nn.Sequential(*_conv_relu(2 * dim, dim, 1)) for _ in self.bins[1:]])
        self.beta = nn.ModuleList(
            [nn.Sequential(*_conv_relu(dim, dim, 3), *_conv_relu(dim, dim, 3)) for _ in self.bins],
        )
        self.res1 = nn.Sequential(*_conv_relu(len(self.bins) * dim, dim, 1))
        self.res2 = nn.Sequential(*_conv_relu(dim, dim, 3), *_conv_relu(dim, dim, 3))
        self.cls = nn.Sequential(*_conv_relu(dim, dim, 3), nn.Dropout2d(dropout), nn.Conv2d(dim, 1, 1))

    def forward(self, guide: torch.Tensor, distances: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Guide ``(B, G, g, g)`` and distance map ``(B, K, g, g)`` → segmentation logits ``(B, 1, *size)``."""
        pyramid: list[torch.Tensor] = []
        for index, (bin_size, pool) in enumerate(zip(self.bins, self.pools, strict=True)):
            guide_bin = pool(guide)
            dist_bin = F.interpolate(distances, size=(bin_size, bin_size), mode="bilinear", align_corners=True)
            x = self.merge[index](torch.cat([guide_bin, dist_bin], dim=1))
            if index > 0:
                previous = F.interpolate(pyramid[-1], size=(bin_size, bin_size), mode="bilinear", align_corners=True)
                x = self.alpha[index - 1](torch.cat([x, previous], dim=1)) + x
            x = self.beta[index](x) + x
            pyramid.append(F.interpolate(x, size=(self.grid, self.grid), mode="bilinear", align_corners=True))
        x = self.res1(torch.cat(pyramid, dim=1))
        x = self.res2(x) + x
        return F.interpolate(self.cls(x), size=size, mode="bilinear", align_corners=True)


def prototype_distances(
    features: torch.Tensor,
    prototypes: torch.Tensor,
    prototype_sq_norms: torch.Tensor,
    eps: float = 1e-12,
) -> torch.Tensor:
    """Euclidean distances between every grid position and every prototype.

    Args:
        features: descriptor ``(B, D, g, g)``.
        prototypes: ``(M, D)``.
        prototype_sq_norms: ``(M,)`` precomputed ``‖c‖²``.
        eps: floor under the squared distance (keeps ``sqrt`` and its gradient finite).

    Returns:
        ``(B, g·g, M)`` distances ``sqrt(‖φ‖² + ‖c‖² − 2 φ·c)``.

    """
    return prototype_sq_distances(features, prototypes, prototype_sq_norms).clamp_min(eps).sqrt()


def prototype_sq_distances(
    features: torch.Tensor, prototypes: torch.Tensor, prototype_sq_norms: torch.Tensor
) -> torch.Tensor:
    """``(B, g·g, M)`` *squared* distances ``‖φ‖² + ‖c‖² − 2 φ·c`` (not floored) of :func:`prototype_distances`."""
    tokens = features.flatten(2).transpose(1, 2)
    return tokens.pow(2).sum(-1, keepdim=True) + prototype_sq_norms - 2.0 * tokens @ prototypes.t()
