"""ED (FOD) losses: reconstruction plus the minimax association terms of the Gaussian-prior attention.

Per level: ``rec = MSE(x̂, x) + mean(1 − cos(x̂, x))``. With ``KL_s(p, q) = KL(p‖q) + KL(q‖p)`` averaged over
heads, tokens and layers (``detach`` marks the side that does not receive gradients):

- ``loss1 = rec + λ₁·KL_s(T_intra, A_intra.detach) − λ₁·KL_s(T_inter, A_inter.detach)`` (trains the targets),
- ``loss2 = rec − λ₁·KL_s(T_intra.detach, A_intra) − λ₂·H(A_intra) + λ₁·KL_s(T_inter.detach, A_inter)
  + λ₂·H(A_inter)`` (trains the attention).

The reference code calls ``loss1.backward(retain_graph=True); loss2.backward(); step()``: the gradients add, so
one backward of ``loss1 + loss2`` is the same update.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from anomalib_fewshot.models.ed.torch_model import symmetric_kl


def entropy(p: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Mean entropy of the rows of ``p`` (with the code's ``log(· + 1e-4)``)."""
    return -(p * torch.log(p + eps)).sum(-1).mean()


def reconstruction_loss(tokens: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """``MSE + mean(1 − cos)`` over channels."""
    return F.mse_loss(reconstruction, tokens) + (1.0 - F.cosine_similarity(reconstruction, tokens, dim=-1)).mean()


class EdLoss(nn.Module):
    """Both ED objectives for one level; see the module docstring.

    Args:
        lambda1: weight of the association (KL) terms.
        lambda2: weight of the entropy terms.
        use_intra: train the intra-image (self-attention) association.
        use_inter: train the inter-image (cross-attention) association.

    """

    def __init__(self, lambda1: float = 0.5, lambda2: float = 0.5, use_intra: bool = True, use_inter: bool = True):
        super().__init__()
        self.lambda1 = lambda1
        self.lambda2 = lambda2
        self.use_intra = use_intra
        self.use_inter = use_inter

    def forward(
        self, tokens: torch.Tensor, reconstruction: torch.Tensor, maps: list[list[torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        """Terms of one level: ``rec``, ``loss1``, ``loss2`` and ``total = loss1 + loss2``."""
        rec = reconstruction_loss(tokens, reconstruction)
        zero = rec.new_zeros(())
        terms = {name: zero for name in ("intra_t", "intra_a", "inter_t", "inter_a", "h_intra", "h_inter")}
        for intra_attn, intra_target, inter_attn, inter_target in maps:
            if self.use_intra:
                terms["intra_t"] = terms["intra_t"] + symmetric_kl(intra_target, intra_attn.detach()).mean()
                terms["intra_a"] = terms["intra_a"] + symmetric_kl(intra_target.detach(), intra_attn).mean()
                terms["h_intra"] = terms["h_intra"] + entropy(intra_attn)
            if self.use_inter:
                terms["inter_t"] = terms["inter_t"] + symmetric_kl(inter_target, inter_attn.detach()).mean()
                terms["inter_a"] = terms["inter_a"] + symmetric_kl(inter_target.detach(), inter_attn).mean()
                terms["h_inter"] = terms["h_inter"] + entropy(inter_attn)
        terms = {name: value / len(maps) for name, value in terms.items()}
        l1, l2 = self.lambda1, self.lambda2
        loss1 = rec + l1 * terms["intra_t"] - l1 * terms["inter_t"]
        loss2 = rec - l1 * terms["intra_a"] - l2 * terms["h_intra"] + l1 * terms["inter_a"] + l2 * terms["h_inter"]
        return {"rec": rec, "loss1": loss1, "loss2": loss2, "total": loss1 + loss2}
