"""FDSL diagnostics: per-branch maps (``research.branches Fdsl``) and cost profiles (``benchmark.cost``).

Branches: the raw feature discrepancy ``|f − nn(f)|`` without any learned head, the global head before and after the
NAM, the LFE window branch, and the model's blend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from anomalib_fewshot.models.fdsl.lightning_model import Fdsl


def branch_maps(model: Fdsl, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Residual norm, global head (raw and after the NAM), LFE windows (when on) and the model's map."""
    net, size = model.model, images.shape[-2:]
    grid = (net.grid, net.grid)

    def upsample(level_maps: list[torch.Tensor]) -> torch.Tensor:
        mean = torch.stack(level_maps, dim=1).mean(1, keepdim=True)
        return F.interpolate(mean, size=size, mode="bilinear", align_corners=True)[:, 0]

    residuals = net.residuals(net.level_tokens(images), net.banks())
    raw = net.head_maps(residuals, net.grid)
    refined = [net.refine(r) for r in raw]
    maps = {
        "fd_residual_norm": upsample([r.norm(dim=-1).reshape(-1, *grid) for r in residuals]),
        "head_global": upsample([r[:, 1] for r in raw]),
        "head_global_nam": upsample([f[:, 1] for f in refined]),
        "head_global_nam_max": upsample([torch.maximum(r[:, 1], f[:, 1]) for r, f in zip(raw, refined, strict=True)]),
    }
    if net.lfe:
        maps["lfe_windows"] = upsample([net.final_anomalous(*m) for m in net.window_level_maps(images)])
    maps["model"] = net(images).anomaly_map[:, 0]
    return maps


def branch_notes(model: Fdsl, train_images: torch.Tensor) -> str:
    """Levels, grid, bank shapes, LFE and score mode."""
    del train_images
    net = model.model
    banks = ", ".join(str(tuple(b.shape)) for b in net.banks())
    lfe = f"on (weight {net.lfe_weight})" if net.lfe else "off"
    return f"levels: {net.num_levels}, grid {net.grid}, banks {banks}, LFE {lfe}, score mode {net.score_mode}"


# ---------------------------------------------------------------------------------------------- cost profiles
_LITE: dict[str, Any] = {
    "backbone": "tf_efficientnet_lite0",
    "layers": ["blocks.2", "blocks.4", "blocks.6"],
    "pre_trained": False,
    "image_size": 256,
    "window_size": 12,
}

#: Candidates measured by ``python -m anomalib_fewshot.benchmark.cost fdsl`` (k = 1; the training step is the
#: pseudo-anomaly head's, batch 8; chose ``fdsl_lite``).
COST_PROFILES: dict[str, dict[str, Any]] = {
    "paper_lfe_off": {"pre_trained": False, "lfe": False},
    "lite_lfe_off": {**_LITE, "lfe": False},
    "lite_lfe_s4": {**_LITE, "window_stride": 4},
    "lite_lfe_s2": {**_LITE, "window_stride": 2},
}
