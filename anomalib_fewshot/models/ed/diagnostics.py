"""ED diagnostics: per-branch maps (``research.branches Ed``) and cost profiles (``benchmark.cost``).

Branches: the reconstruction score, the inter-correlation score and their product (the model's map), averaged over
the levels and per level.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from anomalib_fewshot.models.ed.torch_model import reconstruction_score

if TYPE_CHECKING:
    from anomalib_fewshot.models.ed.lightning_model import Ed


def branch_maps(model: Ed, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """``rec``, ``inter`` and ``rec_x_inter``, mean over the levels and ``*_level<i>`` for each level."""
    net, size = model.model, images.shape[-2:]
    level_tokens = net.tokens(images)
    parts: dict[str, list[torch.Tensor]] = {}
    outputs = net.reconstruct(level_tokens)
    for level, (tokens, (reconstruction, attention), grid) in enumerate(zip(level_tokens, outputs, net.grids,
                                                                            strict=True)):  # fmt: skip
        rec = reconstruction_score(tokens, reconstruction)
        full = net.level_score(tokens, reconstruction, attention)
        inter = full / rec.clamp_min(1e-12)
        for name, value in (("rec", rec), ("inter", inter), ("rec_x_inter", full)):
            grid_map = F.interpolate(value.reshape(-1, 1, *grid), size=size, mode="bilinear", align_corners=True)
            parts.setdefault(name, []).append(grid_map)
            parts[f"{name}_level{level}"] = [grid_map]
    return {name: net.smoothing(torch.stack(maps).mean(0))[:, 0] for name, maps in parts.items()}


def branch_notes(model: Ed, train_images: torch.Tensor) -> str:
    """The number of levels and their token grids."""
    del train_images
    return f"levels: {len(model.model.levels)}, grids {model.model.grids}"


# ---------------------------------------------------------------------------------------------- cost profiles
_LITE: dict[str, Any] = {
    "backbone": "tf_efficientnet_lite0",
    "layers": ["blocks.2", "blocks.4"],
    "pre_trained": False,
}


def _lite(d: int, heads: int, layers: int, **extra: Any) -> dict[str, Any]:
    return {**_LITE, "d_models": [d, 2 * d], "num_heads": heads, "num_layers": layers, **extra}


#: Candidates measured by ``python -m anomalib_fewshot.benchmark.cost ed`` (k = 1, batch 1; chose ``ed_lite``).
COST_PROFILES: dict[str, dict[str, Any]] = {
    "paper": {"pre_trained": False},
    "lite_d64_h8_l3": _lite(64, 8, 3),
    "lite_d64_h4_l3": _lite(64, 4, 3),
    "lite_d64_h2_l2": _lite(64, 2, 2),
    "lite_d64_h1_l1": _lite(64, 1, 1),
    "lite_d128_h4_l3": _lite(128, 4, 3),
    "lite_d64_h4_l3_192px": _lite(64, 4, 3, image_size=192),
}
