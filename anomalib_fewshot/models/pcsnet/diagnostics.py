"""PCSNet diagnostics: per-branch maps (``research.branches Pcsnet``) and cost profiles (``benchmark.cost``).

Branches: the CAS output (and the fused map when the model uses one), and the PFA prototype distances alone: mean
3-NN distance per position and 1-NN distance, smoothed like the CAS map.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from anomalib_fewshot.models.pcsnet.lightning_model import Pcsnet


def branch_maps(model: Pcsnet, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The CAS map (when the model has a CAS) and the two prototype-distance maps."""
    net, size = model.model, images.shape[-2:]
    descriptors = net.describe(images)
    nearest = net.nearest(net.distances(descriptors), max(net.num_nearest, model.loss.neighbors))
    maps = {"cas": net.smoothing(net.segment(descriptors, nearest, size))[:, 0]} if net.cas is not None else {}
    if net.anomaly_map != "cas":  # the product's fused map
        maps[net.anomaly_map] = net(images).anomaly_map[:, 0]
    grid = (net.grid_size, net.grid_size)
    for name, values in (("pfa_3nn_mean", nearest[..., : model.loss.neighbors].mean(-1)), ("pfa_1nn", nearest[..., 0])):
        grid_map = values.reshape(-1, 1, *grid)
        maps[name] = net.smoothing(F.interpolate(grid_map, size=size, mode="bilinear", align_corners=False))[:, 0]
    return maps


def branch_notes(model: Pcsnet, train_images: torch.Tensor) -> str:
    """The learned radius and its hinges beside the training images' nearest-prototype distances."""
    net, loss = model.model, model.loss
    nearest = net.nearest(net.distances(net.describe(train_images)), loss.neighbors).flatten()
    radius = float(net.radius)
    hinges = f"r² = {radius**2:.4g} (L_NFC hinge), (r + α)² = {(radius + loss.alpha) ** 2:.4g} (L_AFS hinge)"
    spread = f"median {nearest.median():.4g}, 5th percentile {nearest.quantile(0.05):.4g}"
    return (
        f"learned radius r = {radius:.4g}: {hinges}\n"
        f"{loss.neighbors}-NN prototype distance on {len(train_images)} training images: {spread}"
    )


# ---------------------------------------------------------------------------------------------- cost profiles
_LITE: dict[str, Any] = {
    "backbone": "tf_efficientnet_lite0",
    "layers": ["blocks.1", "blocks.2", "blocks.4"],
    "pre_trained": False,
}


def _lite(grid: int, nearest: int, cas: int, bins: list[int]) -> dict[str, Any]:
    return {**_LITE, "grid_size": grid, "num_nearest": nearest, "guide_channels": 88, "cas_dim": cas,
            "pyramid_bins": bins}  # fmt: skip


#: Candidates measured by ``python -m anomalib_fewshot.benchmark.cost pcsnet`` (k = 2; chose ``pcsnet_lite``).
COST_PROFILES: dict[str, dict[str, Any]] = {
    "paper": {"pre_trained": False},
    "lite_g32_c96": _lite(32, 50, 96, [30, 15, 8, 4]),
    "lite_g32_c176": _lite(32, 50, 176, [30, 15, 8, 4]),
    "lite_g48_c128": _lite(48, 112, 128, [45, 23, 11, 6]),
    "lite_g64_c128": _lite(64, 200, 128, [60, 30, 15, 8]),
}
