"""PatchCore/SimpleNet-style local feature aggregation into one embedding per patch location."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from anomalib_fewshot.components.nn.ops import adaptive_avg_pool_matrix, local_patch_features, pool_last_dim


class LocalAggregation(nn.Module):
    """Turn multi-level feature maps into ``(B, H0·W0, target_dim)`` patch embeddings.

    For each level: unfold ``patch_size``² neighbourhoods (C-major), up-sample deeper levels bilinearly to
    the first level's grid, average-pool the flattened ``C·p²`` vector to ``pretrain_dim``
    (``adaptive_avg_pool1d`` semantics); then concatenate the levels and pool to ``target_dim``. Pooling with
    non-dividing sizes uses fixed pooling matrices (exact and export-safe).

    Args:
        channels: channels of each input level.
        pretrain_dim: per-level dimension after the first pooling.
        target_dim: output dimension.
        patch_size: neighbourhood size (3 in PatchCore, SimpleNet and DFD).

    """

    def __init__(self, channels: Sequence[int], pretrain_dim: int, target_dim: int, patch_size: int = 3) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.pretrain_dim = pretrain_dim
        self.target_dim = target_dim
        self.channels = list(channels)
        for index, c in enumerate(self.channels):
            self._register_pool(f"level{index}", c * patch_size * patch_size, pretrain_dim)
        self._register_pool("merge", pretrain_dim * len(self.channels), target_dim)

    def _register_pool(self, name: str, in_dim: int, out_dim: int) -> None:
        needs_matrix = in_dim != out_dim and in_dim % out_dim != 0
        matrix = adaptive_avg_pool_matrix(in_dim, out_dim) if needs_matrix else torch.empty(0)
        self.register_buffer(f"pool_{name}", matrix, persistent=False)

    def _pool(self, x: torch.Tensor, name: str, out_dim: int) -> torch.Tensor:
        matrix = getattr(self, f"pool_{name}")
        return pool_last_dim(x, out_dim, matrix if matrix.numel() else None)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Aggregate ``features`` (list of ``(B, C_l, H_l, W_l)``) into ``(B, H_0·W_0, target_dim)``.

        Pooling (over channels) and bilinear up-sampling (over space) are both linear and act on different
        axes, so each level is pooled at its own resolution first and up-sampled afterwards — the same
        result as the reference order, with far less interpolation work for the deep levels.
        """
        height, width = features[0].shape[-2:]
        levels = []
        for index, feature in enumerate(features):
            patches = local_patch_features(feature, self.patch_size)  # (B, C·p², h, w)
            pooled = self._pool(patches.permute(0, 2, 3, 1), f"level{index}", self.pretrain_dim)  # (B, h, w, D)
            if pooled.shape[1:3] != (height, width):
                pooled = F.interpolate(
                    pooled.permute(0, 3, 1, 2), size=(height, width), mode="bilinear", align_corners=False
                ).permute(0, 2, 3, 1)
            levels.append(pooled.reshape(pooled.shape[0], height * width, self.pretrain_dim))
        merged = torch.cat(levels, dim=-1)  # level-major, as PatchCore's Aggregator flattens (N, L, D)
        return self._pool(merged, "merge", self.target_dim)
