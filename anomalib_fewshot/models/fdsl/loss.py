"""FDSL's segmentation loss: focal loss on the 2-class probabilities plus Dice on the anomalous channel.

Applied to every raw and NAM-refined level map (bilinearly up-sampled to the mask size, ``align_corners=True``)
and summed with equal weights, as the reference training script does. Written from the formulas.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from anomalib_fewshot.models.fdsl.torch_model import FdslModel


def focal_loss(
    probabilities: torch.Tensor,
    target: torch.Tensor,
    gamma: float = 2.0,
    alpha: float = 1.0,
    smooth: float = 1e-5,
) -> torch.Tensor:
    """Focal loss of ``(B, 2, H, W)`` class probabilities against a ``(B, H, W)`` binary target.

    The one-hot target is label-smoothed into ``[smooth, 1 − smooth]`` and ``p_t + smooth`` is used inside the
    logarithm (numerical safety of probabilities that reach 0): ``−α (1 − p_t)^γ log(p_t)``, averaged.
    """
    classes = probabilities.shape[1]
    one_hot = F.one_hot(target.long(), classes).permute(0, 3, 1, 2).to(probabilities.dtype)
    one_hot = one_hot.clamp(smooth / (classes - 1), 1.0 - smooth)
    p_t = (one_hot * probabilities).sum(1) + smooth
    return (-alpha * (1.0 - p_t).pow(gamma) * p_t.log()).mean()


def dice_loss(probability: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Binary Dice loss of the anomalous probability ``(B, H, W)``, per image then averaged."""
    p = probability.flatten(1)
    t = target.flatten(1).to(p.dtype)
    dice = (2.0 * (p * t).sum(1) + smooth) / (p.sum(1) + t.sum(1) + smooth)
    return 1.0 - dice.mean()


class FdslLoss(nn.Module):
    """Focal + Dice on each map of every level (raw and NAM), summed.

    Args:
        gamma: focal exponent (2).
        alpha: focal weight (1).
        raw_maps: include the raw head maps (the code trains both raw and NAM outputs).

    """

    def __init__(self, gamma: float = 2.0, alpha: float = 1.0, raw_maps: bool = True) -> None:
        super().__init__()
        self.gamma = gamma
        self.alpha = alpha
        self.raw_maps = raw_maps

    def forward(self, level_maps: Sequence[tuple[torch.Tensor, torch.Tensor]], masks: torch.Tensor) -> torch.Tensor:
        """Loss of ``[(raw, refined), ...]`` 2-channel grid maps against ``(B, H, W)`` binary masks."""
        size = masks.shape[-2:]
        target = (masks > 0.5).to(torch.long)
        total = masks.new_zeros(())
        for raw, refined in level_maps:
            maps = (raw, refined) if self.raw_maps and raw is not refined else (refined,)
            for grid_map in maps:
                full = F.interpolate(grid_map, size=size, mode="bilinear", align_corners=True)
                total = total + focal_loss(full, target, self.gamma, self.alpha) + dice_loss(full[:, 1], target)
        return total


def head_loss(
    model: FdslModel,
    loss: FdslLoss,
    images: torch.Tensor,
    masks: torch.Tensor,
    banks: Sequence[Sequence[torch.Tensor]],
) -> torch.Tensor:
    """Loss of one batch: tokens in one backbone call, each image matched against its own bank."""
    with torch.no_grad():
        tokens = model.level_tokens(images)
        residuals = []
        for index, bank in enumerate(banks):
            residuals.append(model.residuals([t[index : index + 1] for t in tokens], bank))
        level_residuals = [torch.cat([r[level] for r in residuals]) for level in range(model.num_levels)]
    raw = model.head_maps(level_residuals, model.grid)
    return loss([(r, model.refine(r)) for r in raw], masks)
