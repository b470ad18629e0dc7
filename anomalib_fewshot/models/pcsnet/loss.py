"""PCSNet losses: normal-feature compactness, abnormal-feature separation, pixel disparity, segmentation.

Total (reference code weights): ``L_NFC + L_AFS + 50·L_PDC + 40·L_SEG``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from anomalib_fewshot.components.lifecycle.arguments import check_arguments
from anomalib_fewshot.errors import InvalidArgumentError

AfsMode = Literal["intended", "original"]


class PcsnetLoss(nn.Module):
    """The four PCSNet losses.

    Args:
        nu: soft-boundary factor ``ν`` (losses are scaled by ``1/ν``).
        alpha: separation margin ``α`` of ``L_AFS``.
        neighbors: nearest prototypes per position in ``L_NFC``/``L_AFS``/``L_PDC`` (3).
        pdc_top: largest per-position distances averaged into an image's ``L_PDC`` score (50).
        afs_mode: ``"intended"`` — hinge ``(r+α)² − d`` over the ``neighbors`` nearest prototypes at
            anomalous positions (the paper's description); ``"original"`` — the reference code, which masks the
            ``(B, M, g, g)`` distance tensor and takes the smallest values along the last *spatial* axis (so the
            masked-out zeros dominate and the term mainly pushes ``r``).
        nfc_weight: weight of ``L_NFC``.
        afs_weight: weight of ``L_AFS``.
        pdc_weight: weight of ``L_PDC``.
        seg_weight: weight of ``L_SEG``.

    """

    def __init__(
        self,
        nu: float = 1e-3,
        alpha: float = 0.2,
        neighbors: int = 3,
        pdc_top: int = 50,
        afs_mode: Literal["intended", "original"] = "intended",
        nfc_weight: float = 1.0,
        afs_weight: float = 1.0,
        pdc_weight: float = 50.0,
        seg_weight: float = 40.0,
    ) -> None:
        super().__init__()
        check_arguments(PcsnetLoss.__init__, locals())
        if nu <= 0:
            msg = f"nu must be > 0, got {nu}"
            raise InvalidArgumentError(msg)
        self.nu = nu
        self.alpha = alpha
        self.neighbors = neighbors
        self.pdc_top = pdc_top
        self.afs_mode = afs_mode
        self.weights = {"nfc": nfc_weight, "afs": afs_weight, "pdc": pdc_weight, "seg": seg_weight}

    def compactness(self, nearest: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
        """``L_NFC = (1/ν)·mean(max(0, d_kNN − r²))`` over normal positions; ``nearest`` is ``(B, N, ≥k)``."""
        return F.relu(nearest[..., : self.neighbors] - radius**2).mean() / self.nu

    def separation(
        self,
        nearest: torch.Tensor,
        distances: torch.Tensor,
        masks: torch.Tensor,
        radius: torch.Tensor,
    ) -> torch.Tensor:
        """``L_AFS`` on pseudo-anomalous images.

        Args:
            nearest: ``(B, N, ≥k)`` ascending nearest distances (``"intended"``).
            distances: ``(B, N, M)`` all distances (``"original"``).
            masks: ``(B, N)`` anomalous positions on the grid (0/1).
            radius: the learnable radius.

        """
        margin = (radius + self.alpha) ** 2
        if self.afs_mode == "original":
            batch, positions, prototypes = distances.shape
            grid = math.isqrt(positions)
            masked = distances.transpose(1, 2).reshape(batch, prototypes, grid, grid) * masks.view(batch, 1, grid, grid)
            smallest = torch.topk(masked, self.neighbors, dim=-1, largest=False).values
            return F.relu(margin - smallest).mean() / self.nu
        weights = masks.unsqueeze(-1).expand(-1, -1, self.neighbors)
        hinge = F.relu(margin - nearest[..., : self.neighbors]) * weights
        return hinge.sum() / weights.sum().clamp_min(1.0) / self.nu

    def disparity(self, nearest: torch.Tensor, anomalous: torch.Tensor) -> torch.Tensor:
        """``L_PDC``: which image of each pair is anomalous, from its ``pdc_top`` largest kNN distances.

        Args:
            nearest: ``(2P, N, ≥k)`` nearest distances of the mixed pairs (pair ``p`` = rows ``2p, 2p+1``).
            anomalous: ``(2P,)`` 1 for the pseudo-anomalous image of each pair.

        Returns:
            ``Σ_p −log softmax(s_p)[anomalous]`` (cross-entropy with ``reduction="sum"``, as in the code).

        """
        flat = nearest[..., : self.neighbors].flatten(1)
        scores = torch.topk(flat, min(self.pdc_top, flat.shape[1]), dim=1).values.mean(1)
        logits = scores.view(-1, 2)
        targets = anomalous.view(-1, 2).float()
        return -(targets * F.log_softmax(logits, dim=1)).sum()

    def segmentation(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """``L_SEG = MSE(CAS output, mask)`` at the image size."""
        return F.mse_loss(logits, masks)

    def weighted(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """``Σ weight · term``."""
        return sum(self.weights[name] * value for name, value in terms.items())
