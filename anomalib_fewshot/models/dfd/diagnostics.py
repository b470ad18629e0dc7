"""DFD diagnostics: per-branch maps (``python -m research.branches Dfd ...``).

Branches: the Gaussian and Perlin discriminators on their own, each frequency path, and the token scale that the
feature noise ``noise_std`` is compared with.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from anomalib_fewshot.models.dfd.lightning_model import Dfd


def branch_maps(model: Dfd, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each discriminator's smoothed map (summed over the frequency paths) and, with two paths, each path alone."""
    net, size = model.model, images.shape[-2:]
    tokens = net.embed(net.backbone_features(images))
    maps = {}
    for name, disc in (("gaussian", net.gaussian), ("perlin", net.perlin)):
        if disc is None:
            continue
        logits = (-disc(tokens)).reshape(-1, 1, *net.grid)
        per_path = net.smoothing(F.interpolate(logits, size=size, mode="bilinear", align_corners=False))
        per_path = per_path.reshape(net.num_paths, len(images), *size)
        maps[name] = per_path.sum(0)
        if net.num_paths == 2:
            maps[f"{name}/low"], maps[f"{name}/high"] = per_path[0], per_path[1]
    return maps


def branch_notes(model: Dfd, train_images: torch.Tensor) -> str:
    """The spread of the aggregated and adapted tokens on training images, beside the feature noise's std."""
    net = model.model
    aggregated = net.aggregate(net.backbone_features(train_images))
    adapted = net.adaptor(aggregated)
    hp = model.hparams
    noise = f"{hp.noise_std}"
    if hp.noise_scale == "rms":
        noise += f" x token RMS = {float(model._noise_std(adapted)):.3f} on these images"
    return (
        f"token std on {len(train_images)} training images: aggregated {aggregated.std():.2f}, "
        f"adapted {adapted.std():.2f}\nfeature noise std ({hp.noise_scale}): {noise}"
    )
