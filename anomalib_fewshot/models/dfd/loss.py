"""DFD losses: truncated-L1 Gaussian loss, Perlin (pixel + image) loss and the feature similarity loss."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from anomalib_fewshot.components.lifecycle.arguments import check_arguments

SimilarityMode = Literal["cosine", "one_minus_cosine"]


def gaussian_loss(normal_logits: torch.Tensor, noisy_logits: torch.Tensor, margin: float = 0.5) -> torch.Tensor:
    """``mean(max(θ − s_n, 0)) + mean(max(θ + s_noisy, 0))``: normal tokens above ``θ``, noisy below ``−θ``."""
    return F.relu(margin - normal_logits).mean() + F.relu(margin + noisy_logits).mean()


def perlin_loss(
    logit_maps: torch.Tensor,
    masks: torch.Tensor,
    labels: torch.Tensor,
    margin: float = 0.5,
) -> torch.Tensor:
    """``0.5·pix + 0.5·cls`` on full-resolution maps, as DFD's reference code.

    Args:
        logit_maps: ``(B, 1, H, W)`` discriminator logits up-sampled to the mask size (positive = normal).
        masks: ``(B, 1, H, W)`` pseudo-anomaly masks in {0, 1}.
        labels: ``(B,)`` image labels (1 = has a pseudo-anomaly).
        margin: truncation margin ``θ``.

    """
    anomalous = masks > 0.5
    normal_term = F.relu(margin - logit_maps)
    abnormal_term = F.relu(margin + logit_maps)
    n_anomalous = anomalous.sum()
    if n_anomalous > 0:
        pix = (abnormal_term * anomalous).sum() / n_anomalous + (normal_term * ~anomalous).sum() / (~anomalous).sum()
    else:
        pix = normal_term.mean()
    image_prob = torch.sigmoid(-logit_maps).flatten(1).amax(1)
    cls = F.mse_loss(image_prob, labels.to(image_prob))
    return 0.5 * pix + 0.5 * cls


def similarity_loss(
    normal_tokens: torch.Tensor,
    anomalous_tokens: torch.Tensor,
    token_mask: torch.Tensor,
    mode: SimilarityMode = "cosine",
) -> torch.Tensor:
    """Cosine similarity of adapted features at pseudo-anomalous locations.

    ``"cosine"`` (reference code) minimises the cosine, pushing anomalous features away from their normal
    counterparts; ``"one_minus_cosine"`` is the paper's printed ``1 − cos`` (pulls them together).

    Args:
        normal_tokens: ``(B, N, D)``.
        anomalous_tokens: ``(B, N, D)``.
        token_mask: ``(B, N)`` boolean, the max-pooled mask on the token grid.
        mode: see above.

    """
    selected = token_mask.reshape(-1)
    count = selected.sum()
    if count == 0:
        return normal_tokens.sum() * 0.0
    cosine = F.cosine_similarity(
        normal_tokens.reshape(-1, normal_tokens.shape[-1]),
        anomalous_tokens.reshape(-1, anomalous_tokens.shape[-1]),
        dim=-1,
    )
    mean_cosine = (cosine * selected).sum() / count
    return mean_cosine if mode == "cosine" else 1.0 - mean_cosine


class DfdLoss(nn.Module):
    """Weighted sum ``λ_G·L_Gau + λ_P·L_Per + λ_S·L_Sim``, each summed over the frequency paths.

    Defaults are the reference code's (all weights 1, ``θ = 0.5``, cosine similarity); the paper's MVTec
    values are ``perlin_weight=2, similarity_weight=0.02, margin=0.8, similarity="one_minus_cosine"``.
    """

    def __init__(
        self,
        margin: float = 0.5,
        gaussian_weight: float = 1.0,
        perlin_weight: float = 1.0,
        similarity_weight: float = 1.0,
        similarity: SimilarityMode = "cosine",
    ) -> None:
        super().__init__()
        check_arguments(DfdLoss.__init__, locals())
        self.margin = margin
        self.gaussian_weight = gaussian_weight
        self.perlin_weight = perlin_weight
        self.similarity_weight = similarity_weight
        self.similarity = similarity

    def gaussian(self, normal_logits: torch.Tensor, noisy_logits: torch.Tensor) -> torch.Tensor:
        """Weighted Gaussian term for one path."""
        return self.gaussian_weight * gaussian_loss(normal_logits, noisy_logits, self.margin)

    def perlin(self, logit_maps: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Weighted Perlin term for one path."""
        return self.perlin_weight * perlin_loss(logit_maps, masks, labels, self.margin)

    def sim(
        self, normal_tokens: torch.Tensor, anomalous_tokens: torch.Tensor, token_mask: torch.Tensor
    ) -> torch.Tensor:
        """Weighted similarity term for one path."""
        return self.similarity_weight * similarity_loss(normal_tokens, anomalous_tokens, token_mask, self.similarity)
