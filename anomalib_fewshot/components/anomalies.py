"""Pseudo-anomalies: DRAEM-style Perlin image anomalies, foreground masks, rotation and feature noise.

Image anomalies reuse anomalib's :class:`~anomalib.data.utils.generators.perlin.PerlinAnomalyGenerator`
(Perlin mask with scales ``2**U{0..5}``, rotated ±90°, thresholded at 0.5; texture from a folder such as
DTD or, without one, from the noise itself, offline; 3 of 10 random colour/geometry augmentations). On top
of it this module adds what the few-shot methods need: a foreground mask that confines the anomaly to the
object, a configurable anomaly probability and blend range, and labels that follow the final mask.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

ForegroundMode = Literal["auto", "none", "bright", "dark"]

#: Foreground polarity per MVTec AD category, as in DFD's reference code (``anomaly_mask.json``):
#: ``bright`` keeps pixels above the Otsu threshold of the grey image, ``dark`` those at or below it.
MVTEC_FOREGROUND: dict[str, str] = {
    "hazelnut": "bright",
    "metal_nut": "bright",
    "pill": "bright",
    "toothbrush": "bright",
    "bottle": "dark",
    "capsule": "dark",
    "screw": "dark",
    "transistor": "dark",
}


def resolve_foreground(mode: str, category: str | None) -> str:
    """Turn ``"auto"`` into the category's polarity (``"none"`` for unknown categories)."""
    if mode not in ("auto", "none", "bright", "dark"):
        msg = f"foreground must be one of 'auto', 'none', 'bright', 'dark'; got {mode!r}"
        raise ValueError(msg)
    if mode != "auto":
        return mode
    return MVTEC_FOREGROUND.get(str(category or "").lower(), "none")


def foreground_mask(image: torch.Tensor, mode: str) -> torch.Tensor:
    """Otsu foreground mask ``(1, H, W)`` of a ``(3, H, W)`` image in ``[0, 1]``.

    Grey conversion and threshold follow OpenCV (``COLOR_BGR2GRAY`` weights on 8-bit values, ``THRESH_OTSU``).
    ``mode="none"`` returns all ones.
    """
    height, width = image.shape[-2:]
    if mode == "none":
        return torch.ones(1, height, width, dtype=image.dtype, device=image.device)
    from skimage.filters import threshold_otsu

    grey = (image[0] * 0.299 + image[1] * 0.587 + image[2] * 0.114).mul(255).round().clamp(0, 255)
    grey_np = grey.to(torch.uint8).cpu().numpy()
    threshold = threshold_otsu(grey_np) if np.ptp(grey_np) > 0 else 255
    bright = torch.from_numpy(grey_np > threshold).to(image.device)
    mask = bright if mode == "bright" else ~bright
    return mask.to(image.dtype).unsqueeze(0)


def random_rotation(
    image: torch.Tensor,
    degrees: tuple[float, float] = (-90.0, 90.0),
    fill: Literal["zero", "corner"] = "zero",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Rotate a ``(3, H, W)`` image by ``U(degrees)``; corners are filled black or with the top-left colour."""
    angle = float(torch.empty(1).uniform_(*degrees, generator=generator))
    fill_value = image[:, 0, 0].tolist() if fill == "corner" else [0.0] * image.shape[0]
    return TF.rotate(image, angle, interpolation=TF.InterpolationMode.BILINEAR, fill=fill_value)


class PerlinImageAnomaly:
    """DRAEM-style image anomaly: ``I·(1−M) + w·T·M + (1−w)·I·M`` with ``w ~ U(blend)`` and Perlin mask ``M``.

    Args:
        anomaly_source_path: texture folder (e.g. DTD ``images/``); ``None`` uses the Perlin noise as texture
            (works offline with no extra data).
        probability: probability that a sample becomes anomalous.
        blend: range of the texture weight ``w``. DFD's code draws ``β ~ U[0, 0.8)`` and weights the texture
            by ``1 − β``, i.e. ``w ~ U(0.2, 1]``, anomalib's default.

    Returns from ``__call__``: ``(augmented (3,H,W), mask (1,H,W) float, label float)``; the label is 1 only
    if the final (foreground-restricted) mask is non-empty.

    """

    def __init__(
        self,
        anomaly_source_path: str | Path | None = None,
        probability: float = 0.8,
        blend: tuple[float, float] = (0.2, 1.0),
    ) -> None:
        from anomalib.data.utils.generators.perlin import PerlinAnomalyGenerator

        if not 0.0 <= probability <= 1.0:
            msg = f"anomaly probability must be in [0, 1], got {probability}"
            raise ValueError(msg)
        if anomaly_source_path is not None and not Path(anomaly_source_path).is_dir():
            msg = f"anomaly_source_path '{anomaly_source_path}' is not a folder of texture images"
            raise ValueError(msg)
        self.probability = probability
        self.blend = blend
        self.generator = PerlinAnomalyGenerator(
            anomaly_source_path=anomaly_source_path,
            probability=1.0,
            blend_factor=blend,
        )
        if anomaly_source_path is not None and not self.generator.anomaly_source_paths:
            msg = f"anomaly_source_path '{anomaly_source_path}' holds no images"
            raise ValueError(msg)

    def __call__(self, image: torch.Tensor, foreground: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """Make one sample from a ``(3, H, W)`` image in ``[0, 1]``."""
        height, width = image.shape[-2:]
        empty = torch.zeros(1, height, width, dtype=image.dtype, device=image.device)
        if float(torch.rand(1)) >= self.probability:
            return image, empty, torch.tensor(0.0)
        sources = self.generator.anomaly_source_paths
        source = sources[int(torch.randint(len(sources), (1,)))] if sources else None
        perturbation, mask = self.generator.generate_perturbation(height, width, image.device, source)
        texture = perturbation.permute(2, 0, 1).to(image.dtype)
        mask = mask.permute(2, 0, 1).to(image.dtype)
        if foreground is not None:
            mask = mask * foreground
            texture = texture * foreground
        weight = float(torch.empty(1).uniform_(*self.blend))
        augmented = image * (1 - mask) + weight * texture * mask + (1 - weight) * image * mask
        label = torch.tensor(float(mask.amax() > 0))
        return augmented.clamp(0, 1), mask, label


def gaussian_feature_noise(features: torch.Tensor, std: float = 0.015) -> torch.Tensor:
    """Feature-level pseudo-anomalies ``q + ε``, ``ε ~ N(0, std²)`` i.i.d. per element."""
    return features + torch.randn_like(features) * std
