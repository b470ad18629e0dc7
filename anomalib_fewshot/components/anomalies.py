"""Pseudo-anomalies: DRAEM-style Perlin and NSA-style patch-swap image anomalies, foreground masks, rotation, noise.

Image anomalies reuse anomalib's :class:`~anomalib.data.utils.generators.perlin.PerlinAnomalyGenerator`
(Perlin mask with scales ``2**U{0..5}``, rotated ±90°, thresholded at 0.5; texture from a folder such as
DTD or, without one, from the noise itself, offline; 3 of 10 random colour/geometry augmentations). On top
of it this module adds what the few-shot methods need: a foreground mask that confines the anomaly to the
object, a configurable anomaly probability and blend range, and labels that follow the final mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from anomalib_fewshot.errors import InvalidArgumentError

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
        raise InvalidArgumentError(msg)
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


def random_flip_rotate(
    image: torch.Tensor,
    generator: torch.Generator,
    flip: bool = True,
    rotation: float | None = None,
) -> torch.Tensor:
    """Normal variation of a shot: a horizontal flip with probability 0.5, then a rotation by ``U(±rotation)``.

    ``rotation=None`` skips the rotation (and its random draw); corners are filled with the top-left colour.
    """
    if flip and float(torch.rand(1, generator=generator)) < 0.5:
        image = TF.horizontal_flip(image)
    if rotation is not None:
        image = random_rotation(image, (-rotation, rotation), fill="corner", generator=generator)
    return image


def normal_views(
    images: Sequence[torch.Tensor],
    count: int,
    max_shift: float,
    jitter: float,
    seed: int = 0,
    rotation: float = 0.0,
) -> torch.Tensor:
    """``count`` views of every ``(3, H, W)`` image in ``[0, 1]`` that should still look normal: ``(N·count, 3, H, W)``.

    Each view is the image translated by ``U(±max_shift)`` pixels on each axis (sub-pixel, bilinear, reflected at
    the borders, so no black strip appears), rotated by ``U(±rotation)`` degrees when ``rotation`` is positive (about
    the centre, reflected borders) and with its brightness and contrast scaled by ``1 + U(±jitter)``. A model scores
    such views to estimate how its maps vary on *new* good images, which its shots alone cannot tell (a shot is its
    own nearest neighbour). Seeded: the same arguments give the same views (``rotation=0`` draws no angle, so the
    views are those of the function before it had the argument).
    """
    from kornia.geometry.transform import rotate, translate

    if count < 1 or max_shift < 0 or not 0 <= jitter < 1 or rotation < 0:
        msg = (
            "normal_views needs count >= 1, max_shift >= 0, jitter in [0, 1) and rotation >= 0, got "
            f"{count}, {max_shift}, {jitter}, {rotation}"
        )
        raise InvalidArgumentError(msg)
    rng = np.random.default_rng(seed)
    views = []
    for image in images:
        batch = image.unsqueeze(0).expand(count, -1, -1, -1)
        shifts = torch.as_tensor(rng.uniform(-max_shift, max_shift, size=(count, 2)), dtype=image.dtype)
        moved = translate(batch, shifts.to(image.device), padding_mode="reflection", align_corners=False)
        brightness, contrast = (torch.as_tensor(1.0 + rng.uniform(-jitter, jitter, size=(2, count, 1, 1, 1)),
                                                dtype=image.dtype, device=image.device))  # fmt: skip
        if rotation > 0:
            angles = torch.as_tensor(rng.uniform(-rotation, rotation, size=count), dtype=image.dtype)
            moved = rotate(moved, angles.to(image.device), padding_mode="reflection", align_corners=False)
        mean = moved.mean(dim=(1, 2, 3), keepdim=True)
        views.append(((moved - mean) * contrast + mean * brightness).clamp(0, 1))
    return torch.cat(views)


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
            raise InvalidArgumentError(msg)
        if anomaly_source_path is not None and not Path(anomaly_source_path).is_dir():
            msg = f"anomaly_source_path '{anomaly_source_path}' is not a folder of texture images"
            raise InvalidArgumentError(msg)
        self.probability = probability
        self.blend = blend
        self.generator = PerlinAnomalyGenerator(
            anomaly_source_path=anomaly_source_path,
            probability=1.0,
            blend_factor=blend,
        )
        if anomaly_source_path is not None and not self.generator.anomaly_source_paths:
            msg = f"anomaly_source_path '{anomaly_source_path}' holds no images"
            raise InvalidArgumentError(msg)

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


def gaussian_feature_noise(features: torch.Tensor, std: float | torch.Tensor = 0.015) -> torch.Tensor:
    """Feature-level pseudo-anomalies ``q + ε``, ``ε ~ N(0, std²)`` i.i.d. per element."""
    return features + torch.randn_like(features) * std


@dataclass(frozen=True)
class PatchSwapParams:
    """Per-category settings of the NSA-style same-image patch swap (:class:`PatchSwapAnomaly`).

    Attributes:
        width_bounds: ``((min, max) along height, (min, max) along width)`` of the patch *half*-width, relative
            to the image size.
        num_patches: patches to try; the first always, each further one with probability 1/2.
        min_object_pct: share of the source patch that must be object (only with ``skip_background``).
        min_overlap_pct: share of the source object that must land on object at the destination.
        skip_background: ``(brightness, threshold)`` on the 0–255 scale: pixels whose grey value is within
            ``threshold`` of ``brightness`` are background; ``None`` treats every pixel as object.

    """

    width_bounds: tuple[tuple[float, float], tuple[float, float]] = ((0.03, 0.4), (0.03, 0.4))
    num_patches: int = 1
    min_object_pct: float = 0.7
    min_overlap_pct: float = 0.25
    skip_background: tuple[float, float] | None = None


_SMALL = ((0.01, 0.05), (0.01, 0.05))
_SMALL_TALL = ((0.01, 0.05), (0.01, 0.1))
_WHITE_BG = (200.0, 60.0)
_BLACK_BG = (20.0, 20.0)

#: NSA settings per MVTec AD category, as used by PCSNet's reference code (NSA's tables). Categories that are
#: not listed (e.g. magnetic tile, a user's own part) use :class:`PatchSwapParams`'s defaults.
NSA_CATEGORY_PARAMS: dict[str, PatchSwapParams] = {
    "bottle": PatchSwapParams(skip_background=_WHITE_BG),
    "cable": PatchSwapParams(_SMALL, num_patches=3),
    "capsule": PatchSwapParams(_SMALL, skip_background=_WHITE_BG),
    "carpet": PatchSwapParams(num_patches=2),
    "grid": PatchSwapParams(_SMALL_TALL, num_patches=3),
    "hazelnut": PatchSwapParams(_SMALL_TALL, num_patches=3, skip_background=_BLACK_BG),
    "leather": PatchSwapParams(_SMALL, num_patches=3),
    "metal_nut": PatchSwapParams(((0.05, 0.4), (0.05, 0.4)), min_object_pct=0.5, skip_background=_BLACK_BG),
    "pill": PatchSwapParams(_SMALL_TALL, num_patches=2, skip_background=_BLACK_BG),
    "screw": PatchSwapParams(_SMALL, min_object_pct=0.5, skip_background=_WHITE_BG),
    "tile": PatchSwapParams(_SMALL_TALL),
    "toothbrush": PatchSwapParams(_SMALL, num_patches=3, min_object_pct=0.25, skip_background=_BLACK_BG),
    "transistor": PatchSwapParams(num_patches=3),
    "wood": PatchSwapParams(_SMALL, num_patches=3),
    "zipper": PatchSwapParams(num_patches=3, skip_background=_WHITE_BG),
}


class PatchSwapAnomaly:
    """NSA-style pseudo-anomaly: patches cut from the image itself and pasted, unblended, at a shifted place.

    This is the configuration PCSNet trains with (NSA's ``patch_ex`` with ``same=True``, ``mode='swap'``,
    ``shift=True``, ``resize=False``, binary labels), written from its description: the patch half-width is
    ``lower + Gamma(shape, scale)`` of the image size, clipped to ``width_bounds``; with ``skip_background``
    the source must be mostly object and must overlap object at the destination; the label marks pixels whose
    mean absolute change exceeds ``tol`` (0–255 scale), median-filtered (5×5).

    Args:
        params: per-category settings (see :data:`NSA_CATEGORY_PARAMS`).
        gamma_params: ``(shape, scale, lower)`` of the half-width distribution.
        tol: label threshold on the mean absolute change (0–255 scale).
        max_attempts: placement attempts per patch before giving up on it.

    """

    def __init__(
        self,
        params: PatchSwapParams | None = None,
        gamma_params: tuple[float, float, float] = (2.0, 0.05, 0.03),
        tol: float = 1.0,
        max_attempts: int = 200,
    ) -> None:
        self.params = params or PatchSwapParams()
        for axis in self.params.width_bounds:
            if not 0.0 <= axis[0] <= axis[1] <= 0.5:
                msg = f"patch width bounds must satisfy 0 <= min <= max <= 0.5, got {self.params.width_bounds}"
                raise InvalidArgumentError(msg)
        if self.params.num_patches < 1:
            msg = f"num_patches must be >= 1, got {self.params.num_patches}"
            raise InvalidArgumentError(msg)
        self.gamma_params = gamma_params
        self.tol = tol
        self.max_attempts = max_attempts

    @staticmethod
    def _median(mask: np.ndarray, size: int) -> np.ndarray:
        from kornia.filters import median_blur

        tensor = torch.from_numpy(mask.astype(np.float32))[None, None]
        return median_blur(tensor, (size, size))[0, 0].numpy() > 0.5

    def _object_mask(self, image: np.ndarray) -> np.ndarray | None:
        if self.params.skip_background is None:
            return None
        brightness, threshold = self.params.skip_background
        return self._median(np.abs(image.mean(-1) - brightness) > threshold, 7)

    def _paste_one(
        self,
        out: np.ndarray,
        source: np.ndarray,
        objects: np.ndarray | None,
        label_area: np.ndarray,
        rng: np.random.Generator,
    ) -> None:
        height, width = out.shape[:2]
        p = self.params
        (lo1, hi1), (lo2, hi2) = p.width_bounds
        min1, max1 = round(lo1 * height), round(hi1 * height)
        min2, max2 = round(lo2 * width), round(hi2 * width)
        shape, scale, lower = self.gamma_params
        half1 = int(np.clip((lower + rng.gamma(shape, scale)) * height, max(min1, 1), max(max1, 1)))
        half2 = int(np.clip((lower + rng.gamma(shape, scale)) * width, max(min2, 1), max(max2, 1)))
        for _ in range(self.max_attempts):  # source box
            c1 = int(rng.integers(min1, max(height - min1, min1 + 1)))
            c2 = int(rng.integers(min2, max(width - min2, min2 + 1)))
            a1, b1 = max(c1 - half1, 0), min(c1 + half1, height)
            a2, b2 = max(c2 - half2, 0), min(c2 + half2, width)
            if b1 - a1 < 1 or b2 - a2 < 1:
                continue
            if objects is None or objects[a1:b1, a2:b2].mean() > p.min_object_pct:
                break
        else:
            return
        patch = source[a1:b1, a2:b2]
        h, w = patch.shape[:2]
        if h + 2 >= height or w + 2 >= width:
            return
        src_objects = objects[a1:b1, a2:b2] if objects is not None else None
        for _ in range(self.max_attempts):  # destination box
            d1 = int(rng.integers(h // 2 + 1, height - h // 2 - 1))
            d2 = int(rng.integers(w // 2 + 1, width - w // 2 - 1))
            t1, t2 = d1 - h // 2, d2 - w // 2
            if src_objects is None:
                break
            dest_objects = objects[t1 : t1 + h, t2 : t2 + w]
            overlap = (dest_objects & src_objects).sum() / max(src_objects.sum(), 1)
            if src_objects.mean() > p.min_object_pct and overlap > p.min_overlap_pct:
                break
        else:
            return
        paste = np.ones((h, w), dtype=bool)
        if src_objects is not None:
            paste &= src_objects | objects[t1 : t1 + h, t2 : t2 + w]
        region = out[t1 : t1 + h, t2 : t2 + w]
        region[paste] = patch[paste]
        label_area[t1 : t1 + h, t2 : t2 + w] = paste

    def __call__(self, image: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Make one pseudo-anomaly from a ``(3, H, W)`` image in ``[0, 1]``: ``(image, mask (1, H, W) float)``."""
        source = image.detach().permute(1, 2, 0).cpu().numpy().astype(np.float64) * 255.0
        objects = self._object_mask(source)
        out = source.copy()
        area = np.zeros(source.shape[:2], dtype=bool)
        for index in range(self.params.num_patches):
            if index == 0 or rng.integers(2):
                self._paste_one(out, source, objects, area, rng)
        change = np.abs(out - source).mean(-1) * area
        label = self._median(change > self.tol, 5)
        augmented = torch.from_numpy(out / 255.0).permute(2, 0, 1).to(image)
        return augmented, torch.from_numpy(label).to(image).unsqueeze(0)
