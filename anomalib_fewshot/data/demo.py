"""A small generated inspection dataset in MVTec AD layout, for offline demos and tests.

The "part" is a textured metal plate with a regular grid of rivets, lit by a soft gradient; every image
varies in position, lighting and sensor noise. Defects are ``scratch`` (thin dark or bright streaks) and
``stain`` (blotches of another colour). Pixel masks are exact. Everything is deterministic given ``seed``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

DEFECTS = ("scratch", "stain")


def _plate(rng: np.random.Generator, size: int) -> Image.Image:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0, 2 * np.pi)
    light = 0.55 + 0.15 * (np.cos(angle) * xx + np.sin(angle) * yy) + rng.normal(0, 0.02)
    grain = np.repeat(rng.normal(0, 1, (size, 1)), size, axis=1) * 0.02  # brushed-metal streaks
    noise = rng.normal(0, 0.015, (size, size))
    grey = np.clip(light + grain + noise, 0, 1)
    rgb = np.stack([grey * 0.95, grey, grey * 1.05], axis=-1)
    image = Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    step = size / 4
    offset = rng.uniform(-0.03, 0.03, 2) * size
    radius = size * 0.045
    for i in range(4):
        for j in range(4):
            cx = (i + 0.5) * step + offset[0]
            cy = (j + 0.5) * step + offset[1]
            draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=(70, 72, 78))
            r2 = radius * 0.55
            draw.ellipse([cx - r2, cy - r2, cx + r2, cy + r2], fill=(190, 192, 196))
    return image


def _defect(image: Image.Image, kind: str, rng: np.random.Generator) -> tuple[Image.Image, Image.Image]:
    size = image.size[0]
    mask = Image.new("L", image.size, 0)
    overlay = image.copy()
    draw, mdraw = ImageDraw.Draw(overlay), ImageDraw.Draw(mask)
    if kind == "scratch":
        for _ in range(rng.integers(1, 3)):
            x0, y0 = rng.uniform(0.15, 0.85, 2) * size
            length = rng.uniform(0.2, 0.4) * size
            angle = rng.uniform(0, np.pi)
            x1, y1 = x0 + np.cos(angle) * length, y0 + np.sin(angle) * length
            width = max(2, int(size * rng.uniform(0.012, 0.02)))
            colour = (25, 20, 20) if rng.random() < 0.5 else (250, 245, 235)
            draw.line([x0, y0, x1, y1], fill=colour, width=width)
            mdraw.line([x0, y0, x1, y1], fill=255, width=width)
    else:
        for _ in range(rng.integers(1, 3)):
            cx, cy = rng.uniform(0.2, 0.8, 2) * size
            rx, ry = rng.uniform(0.04, 0.09, 2) * size
            colour = tuple(int(c) for c in rng.choice([(150, 85, 40), (60, 110, 60), (120, 60, 120)]))
            draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=colour)
            mdraw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
    overlay = overlay.filter(ImageFilter.GaussianBlur(0.6))
    mask_np = np.array(mask) > 127
    result = np.where(mask_np[..., None], np.array(overlay), np.array(image))
    return Image.fromarray(result.astype(np.uint8)), Image.fromarray((mask_np * 255).astype(np.uint8))


def make_demo_dataset(
    root: str | Path,
    category: str = "plate",
    n_train: int = 10,
    n_test_good: int = 8,
    n_test_defect: int = 6,
    size: int = 256,
    seed: int = 0,
) -> Path:
    """Write the demo dataset to ``root/<category>`` (MVTec AD layout) and return that folder.

    Layout: ``train/good``, ``test/good``, ``test/<defect>``, ``ground_truth/<defect>/<name>_mask.png`` for
    the defects in :data:`DEFECTS`. Existing files are overwritten; nothing else is touched.
    """
    rng = np.random.default_rng(seed)
    base = Path(root) / category
    folders = {
        "train": base / "train" / "good",
        "good": base / "test" / "good",
        **{d: base / "test" / d for d in DEFECTS},
        **{f"mask_{d}": base / "ground_truth" / d for d in DEFECTS},
    }
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_train):
        _plate(rng, size).save(folders["train"] / f"{i:03d}.png")
    for i in range(n_test_good):
        _plate(rng, size).save(folders["good"] / f"{i:03d}.png")
    for kind in DEFECTS:
        for i in range(n_test_defect):
            image, mask = _defect(_plate(rng, size), kind, rng)
            image.save(folders[kind] / f"{i:03d}.png")
            mask.save(folders[f"mask_{kind}"] / f"{i:03d}_mask.png")
    return base


def main(argv: list[str] | None = None) -> None:
    """``python -m anomalib_fewshot.data.demo ROOT``: write the demo dataset."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--category", default="plate")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(make_demo_dataset(args.root, args.category, size=args.size, seed=args.seed))


if __name__ == "__main__":
    main()
