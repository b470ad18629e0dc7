"""Synthetic defects for the development split: families unlike every model's own training anomalies.

The models train on Perlin-shaped image anomalies and Gaussian feature noise (DFD, FDSL's pseudo head), same-image
patch swaps (PCSNet) or real defects of another dataset (FDSL's cross-dataset heads). A development split made of
those would reward a model for recognising its own training signal, so the families here are none of them:

- ``scratch``: a thin dark or bright curve (scratches, cracks), a quadratic Bézier stroke 1-3 px wide per 256 px;
- ``blob``: a small dark or bright ellipse (holes, blowholes, stains);
- ``blur``: the image blurred (Gaussian, kornia) or smeared (copies shifted along a line) inside an ellipse;
- ``shift``: a local intensity or colour shift inside an ellipse (grey images get grey defects: every family's
  change is averaged over the channels when the image's three channels are equal);
- ``foreign``: a patch of foreign texture (from images of *another* dataset, or a procedural texture when none is
  given) inside an ellipse.

Each family comes in three sizes (``small``, ``medium``, ``large``, relative to the shorter image side). The mask
is the defect's region (the stroke, the ellipse) and it is exact: the image is changed inside it and nowhere else.
A region that the defect leaves almost unchanged on average (mean change, max over the channels, below
:data:`VISIBLE` in ``[0, 1]``: a blur on a flat area, a dark blob on a dark background, a bright scratch on white) is
drawn again elsewhere, so every mask marks a visible defect.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

#: Version of the generator, recorded with every development split and every row measured on one.
GENERATOR_VERSION = "dev-defects-1"
#: The defect families, in the order a split cycles through them.
FAMILIES: tuple[str, ...] = ("scratch", "blob", "blur", "shift", "foreign")
#: Defect sizes: the radius (or half-length for scratches) as a fraction of the shorter image side.
SIZES: dict[str, tuple[float, float]] = {"small": (0.02, 0.045), "medium": (0.045, 0.09), "large": (0.09, 0.16)}
#: The smallest mean change over a defect's region (max over channels, images in [0, 1]) that counts as visible.
VISIBLE = 0.04
#: The smallest region, in pixels.
MIN_PIXELS = 12
#: Draws of a defect before giving up on an image.
ATTEMPTS = 20


class DefectError(RuntimeError):
    """No visible defect of the requested family could be drawn on an image (e.g. a uniform image and ``blur``)."""


@dataclass(frozen=True)
class Defect:
    """One drawn defect: the defective image ``(3, H, W)`` in ``[0, 1]``, its region ``(H, W)`` and its kind."""

    image: torch.Tensor
    mask: torch.Tensor
    family: str
    size: str


def _ellipse_region(height: int, width: int, rng: np.random.Generator, radius: float) -> np.ndarray:
    """A filled, rotated ellipse with mean radius ``radius`` px at a random place (kept inside the image)."""
    ratio = rng.uniform(0.5, 1.0)
    rx, ry = radius / math.sqrt(ratio), radius * math.sqrt(ratio)
    reach = max(rx, ry)
    cx = rng.uniform(min(reach, width / 2), max(width - reach, width / 2))
    cy = rng.uniform(min(reach, height / 2), max(height - reach, height / 2))
    angle = rng.uniform(0, math.pi)
    t = np.linspace(0, 2 * math.pi, 48, endpoint=False)
    x = cx + rx * np.cos(t) * math.cos(angle) - ry * np.sin(t) * math.sin(angle)
    y = cy + rx * np.cos(t) * math.sin(angle) + ry * np.sin(t) * math.cos(angle)
    canvas = Image.new("L", (width, height), 0)
    ImageDraw.Draw(canvas).polygon(list(zip(x.tolist(), y.tolist(), strict=True)), fill=255)
    return np.asarray(canvas) > 127


def _curve_region(height: int, width: int, rng: np.random.Generator, half_length: float) -> np.ndarray:
    """A quadratic Bézier stroke of length about ``2 * half_length`` px, 1-3 px wide per 256 px of image side."""
    side = min(height, width)
    cx, cy = rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.9) * height
    angle = rng.uniform(0, math.pi)
    dx, dy = math.cos(angle) * half_length, math.sin(angle) * half_length
    p0, p2 = np.array([cx - dx, cy - dy]), np.array([cx + dx, cy + dy])
    bend = rng.uniform(-0.5, 0.5) * half_length
    p1 = np.array([cx, cy]) + bend * np.array([-math.sin(angle), math.cos(angle)])
    t = np.linspace(0, 1, 64)[:, None]
    points = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
    stroke = max(1, round(rng.uniform(1, 3) * side / 256))
    canvas = Image.new("L", (width, height), 0)
    ImageDraw.Draw(canvas).line([tuple(p) for p in points.tolist()], fill=255, width=stroke, joint="curve")
    return np.asarray(canvas) > 127


def _towards(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """The image pulled towards black or white (dark or bright defect) by 55-90 %."""
    strength = float(rng.uniform(0.55, 0.9))
    target = 0.0 if rng.random() < 0.5 else 1.0
    return image * (1 - strength) + target * strength


def _blurred(image: torch.Tensor, region: np.ndarray, rng: np.random.Generator, radius: float) -> torch.Tensor:
    """Gaussian blur (sigma about a third of the radius) or a smear (the mean of copies shifted along a line).

    Computed on the region's bounding box with a margin only (large images stay cheap).
    """
    import kornia.filters as KF

    sigma = max(1.5, radius / 3)
    reach = 3 * math.ceil(sigma)
    rows, cols = np.nonzero(region)
    top, bottom = max(0, rows.min() - reach), min(region.shape[0], rows.max() + reach + 1)
    left, right = max(0, cols.min() - reach), min(region.shape[1], cols.max() + reach + 1)
    crop = image[None, :, top:bottom, left:right]
    if rng.random() < 0.5:
        kernel = 2 * reach + 1
        blurred = KF.gaussian_blur2d(crop, (kernel, kernel), (sigma, sigma), border_type="replicate")
    else:
        length = max(3.0, radius)
        angle = float(rng.uniform(0, math.pi))
        padded = torch.nn.functional.pad(crop, (reach, reach, reach, reach), mode="replicate")
        height, width = crop.shape[-2:]
        copies = []
        for step in np.linspace(-length / 2, length / 2, 9):
            dy, dx = round(step * math.sin(angle)), round(step * math.cos(angle))
            dy, dx = max(-reach, min(reach, dy)), max(-reach, min(reach, dx))
            copies.append(padded[..., reach + dy : reach + dy + height, reach + dx : reach + dx + width])
        blurred = torch.stack(copies).mean(0)
    changed = image.clone()
    changed[:, top:bottom, left:right] = blurred[0]
    return changed


def _shifted(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """A gain (0.55-0.8 or 1.25-1.6) or a colour offset (±0.12-0.3 on one or more channels)."""
    if rng.random() < 0.5:
        gain = rng.uniform(0.55, 0.8) if rng.random() < 0.5 else rng.uniform(1.25, 1.6)
        return (image * float(gain) + (0.08 if gain > 1 else 0.0)).clamp(0, 1)
    offset = torch.as_tensor(rng.uniform(0.12, 0.3, 3) * rng.choice([-1.0, 1.0], 3), dtype=image.dtype)
    offset = offset * torch.as_tensor(rng.random(3) < 0.7, dtype=image.dtype)
    if not offset.any():
        offset[int(rng.integers(3))] = 0.2
    return (image + offset[:, None, None]).clamp(0, 1)


def procedural_texture(height: int, width: int, rng: np.random.Generator) -> torch.Tensor:
    """A colourful texture unlike industrial parts (stripes or checks with noise), when no foreign images exist."""
    yy, xx = torch.meshgrid(
        torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij"
    )
    period = float(rng.uniform(4, 12))
    angle = float(rng.uniform(0, math.pi))
    phase = (xx * math.cos(angle) + yy * math.sin(angle)) / period
    pattern = (
        torch.sin(2 * math.pi * phase)
        if rng.random() < 0.5
        else torch.sign(torch.sin(phase * 3.1) * torch.sin(yy / period * 3.1))
    )
    colours = torch.as_tensor(rng.uniform(0, 1, (2, 3)), dtype=torch.float32)
    weight = (pattern[None] + 1) / 2
    texture = colours[0][:, None, None] * weight + colours[1][:, None, None] * (1 - weight)
    noise = torch.as_tensor(rng.normal(0, 0.05, (3, height, width)), dtype=torch.float32)
    return (texture + noise).clamp(0, 1)


def _foreign(image: torch.Tensor, rng: np.random.Generator, sources: Sequence[torch.Tensor]) -> torch.Tensor:
    """A crop of a foreign image (random place, 30-70 % of its side), resized to the image; else a texture."""
    _, height, width = image.shape
    if not sources:
        return procedural_texture(height, width, rng)
    source = sources[int(rng.integers(len(sources)))]
    _, sh, sw = source.shape
    crop = rng.uniform(0.3, 0.7)
    ch, cw = max(8, int(sh * crop)), max(8, int(sw * crop))
    top, left = int(rng.integers(0, sh - ch + 1)), int(rng.integers(0, sw - cw + 1))
    patch = source[:3, top : top + ch, left : left + cw]
    if patch.shape[0] == 1:
        patch = patch.expand(3, -1, -1)
    return torch.nn.functional.interpolate(patch[None], size=(height, width), mode="bilinear", align_corners=False)[0]


def add_defect(
    image: torch.Tensor,
    family: str,
    size: str,
    rng: np.random.Generator,
    foreign_images: Sequence[torch.Tensor] = (),
) -> Defect:
    """Draw one defect of ``family`` and ``size`` on ``image`` ``(3, H, W)`` in ``[0, 1]``.

    Args:
        image: the good image (not changed).
        family: one of :data:`FAMILIES`.
        size: one of :data:`SIZES`.
        rng: the random generator (the only source of randomness: same seed, same defect).
        foreign_images: ``(3, h, w)`` images of another dataset for ``foreign`` (procedural texture if empty).

    Returns:
        The defective image and its exact mask (see the module docstring).

    Raises:
        ValueError: an unknown family or size.
        DefectError: no visible defect after :data:`ATTEMPTS` draws.

    """
    if family not in FAMILIES:
        msg = f"unknown defect family {family!r}; one of {FAMILIES}"
        raise ValueError(msg)
    if size not in SIZES:
        msg = f"unknown defect size {size!r}; one of {tuple(SIZES)}"
        raise ValueError(msg)
    image = image[:3].float()
    _, height, width = image.shape
    grayscale = bool((image[0] == image[1]).all() and (image[1] == image[2]).all())
    side = min(height, width)
    for _ in range(ATTEMPTS):
        radius = float(rng.uniform(*SIZES[size])) * side
        if family == "scratch":
            region = _curve_region(height, width, rng, half_length=2.5 * radius)
        else:
            region = _ellipse_region(height, width, rng, max(radius, 2.0))
        if family in ("scratch", "blob"):
            changed = _towards(image, rng)
        elif family == "blur":
            changed = _blurred(image, region, rng, radius)
        elif family == "shift":
            changed = _shifted(image, rng)
        else:
            changed = _foreign(image, rng, foreign_images)
        if grayscale:  # a grey part keeps grey defects (no colour cue a real defect of it could not have)
            changed = changed.mean(0, keepdim=True).expand_as(changed)
        mask = torch.from_numpy(region)
        if int(mask.sum()) >= MIN_PIXELS and float((changed - image).abs().amax(0)[mask].mean()) >= VISIBLE:
            return Defect(torch.where(mask[None], changed, image), mask, family, size)
    msg = f"no visible '{family}' defect could be drawn on a {width}x{height} image in {ATTEMPTS} attempts"
    raise DefectError(msg)
