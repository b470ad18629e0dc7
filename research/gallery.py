"""Look inside a fitted checkpoint: the training pool it learnt from, and each branch's heat-map on chosen images.

    python -m research.gallery MODEL CKPT ROOT CATEGORY --output DIR [--count 8]

Writes two PNGs to ``DIR``:

- ``pool.png``: ``--count`` samples of what a fit on the checkpoint's shots trains on (the model's own generator,
  seeded like the fit: :meth:`~anomalib_fewshot.components.lifecycle.lightning.ShotModelMixin.training_samples`), the
  pseudo-anomaly masks outlined in red. ED trains on normal images only: its row shows augmented shots.
- ``branches.png``: one row per image of ``ROOT``'s test folder (the first defective image of every defect type,
  then the first good one), the image with its ground-truth mask outlined, then every branch's raw map
  (``ModelSpec.branch_maps``, the same maps as :mod:`research.branches`) overlaid with anomalib's
  visualisation functions. Each branch is min-max scaled over the rows shown, so a column compares its images
  (a good image that lights up as much as a defect is a false positive of that branch).

``ROOT`` is a development split (``benchmark_results/dev_splits/<version>/<dataset>``) or a dataset; the shots are
read from the paths the checkpoint recorded. Diagnosis only: nothing here feeds back into a default.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from anomalib_fewshot.data.dev_split import outlined, write_png
from anomalib_fewshot.errors import InvalidArgumentError
from research.branches import BRANCHES

TILE = 192


def pool_gallery(model: Any, shots: list[torch.Tensor], path: Path, count: int = 8, per_row: int = 8) -> Path:
    """Write ``count`` training samples of ``model`` made from ``shots`` (masks outlined) as a PNG grid."""
    images, masks = model.training_samples(shots, count)
    tiles = [outlined(image, mask, TILE) for image, mask in zip(images, masks, strict=True)]
    tiles += [torch.zeros(3, TILE, TILE)] * (-len(tiles) % per_row)
    rows = [torch.cat(tiles[i : i + per_row], dim=2) for i in range(0, len(tiles), per_row)]
    return write_png(path, torch.cat(rows, dim=1))


def heat(values: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """A raw map ``(H, W)`` scaled by ``[low, high]`` and coloured with anomalib's colormap: ``(3, H, W)``."""
    import numpy as np
    from anomalib.visualization.image.functional import visualize_anomaly_map

    scaled = ((values.float() - low) / max(high - low, 1e-12)).clamp(0, 1)
    coloured = visualize_anomaly_map((scaled * 255).round().to(torch.uint8).numpy(), colormap=True)
    return torch.from_numpy(np.asarray(coloured).copy()).permute(2, 0, 1).float() / 255


def branch_gallery(
    images: torch.Tensor, masks: torch.Tensor, maps: dict[str, torch.Tensor], path: Path, alpha: float = 0.5
) -> Path:
    """Rows: images ``(N, 3, H, W)`` with masks outlined, then each branch's map ``(N, H, W)`` over the image."""
    ranges = {name: (float(values.min()), float(values.max())) for name, values in maps.items()}
    rows = []
    for index, image in enumerate(images):
        tiles = [outlined(image, masks[index], TILE)]
        base = torch.nn.functional.interpolate(image[None].float(), size=(TILE, TILE), mode="bilinear")[0]
        for name, values in maps.items():
            colour = heat(values[index], *ranges[name])
            colour = torch.nn.functional.interpolate(colour[None], size=(TILE, TILE), mode="bilinear")[0]
            tiles.append(outlined((1 - alpha) * base + alpha * colour, masks[index], TILE))
        rows.append(torch.cat(tiles, dim=2))
    return write_png(path, torch.cat(rows, dim=1))


def pick_images(root: Path, category: str) -> list[tuple[str, Path, Path | None]]:
    """The first image of every defect type of ``root/category/test`` (sorted), then the first good one.

    Returns ``(type, image, mask or None)`` triples.
    """
    test = root / category / "test"
    if not test.is_dir():
        msg = f"{test} does not exist: ROOT must be an MVTec-layout root with a {category}/test folder"
        raise InvalidArgumentError(msg)
    picks = []
    types = sorted(p.name for p in test.iterdir() if p.is_dir() and p.name != "good")
    for kind in [*types, "good"]:
        files = sorted(p for p in (test / kind).iterdir() if p.is_file()) if (test / kind).is_dir() else []
        if not files:
            continue
        image = files[0]
        mask = root / category / "ground_truth" / kind / f"{image.stem}_mask.png"
        picks.append((kind, image, mask if mask.is_file() else None))
    return picks


def model_inputs(transform: Any, picks: list[tuple[str, Path, Path | None]]) -> tuple[torch.Tensor, torch.Tensor]:
    """The picked images in the model's geometry ``(N, 3, H, W)`` and their masks ``(N, 1, H, W)`` (nearest)."""
    from anomalib_fewshot.components.io.images import read_image

    images, masks = [], []
    for _, image_path, mask_path in picks:
        image = read_image(image_path)
        mask = read_image(mask_path)[:1] if mask_path is not None else torch.zeros_like(image[:1])
        image = transform(image[None])[0]  # the model's geometry (a plain-tensor mask would pass through untouched)
        mask = torch.nn.functional.interpolate(mask[None].float(), size=image.shape[-2:], mode="nearest")[0]
        images.append(image.clamp(0, 1))
        masks.append((mask > 0.5).float())
    return torch.stack(images), torch.stack(masks)


def main(argv: list[str] | None = None) -> dict[str, Path]:
    """Write ``pool.png`` and ``branches.png``; return their paths."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("model", choices=sorted(BRANCHES))
    parser.add_argument("ckpt", type=Path)
    parser.add_argument("root", type=Path)
    parser.add_argument("category")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--count", type=int, default=8, help="training samples shown (default 8)")
    args = parser.parse_args(argv)
    if not args.ckpt.is_file():
        msg = f"checkpoint {args.ckpt} does not exist"
        raise InvalidArgumentError(msg)
    spec = BRANCHES[args.model]
    model = spec.model_class.load_from_checkpoint(args.ckpt, weights_only=True).eval()
    shot_paths = (model.few_shot_record or {}).get("shots") or []
    missing = [p for p in shot_paths if not Path(p).is_file()]
    if not shot_paths or missing:
        msg = f"{args.ckpt}: the recorded shot files are missing ({missing or 'no shots recorded'})"
        raise InvalidArgumentError(msg)
    model.fit_category = args.category  # category tables of the pseudo-anomaly generators, as during the fit
    out = {"pool": pool_gallery(model, model.read_shot_images(shot_paths), args.output / "pool.png", args.count)}
    picks = pick_images(args.root, args.category)
    batch, masks = model_inputs(model.pre_processor.transform, picks)
    with torch.no_grad():
        maps = {name: value.reshape(len(batch), *batch.shape[-2:]).float()
                for name, value in spec.branch_maps(model, batch).items()}  # fmt: skip
    out["branches"] = branch_gallery(batch, masks, maps, args.output / "branches.png")
    legend = " | ".join(["image (mask outlined)", *maps])
    rows = ", ".join(kind for kind, _, _ in picks)
    print(f"{out['pool']}: {args.count} training samples\n{out['branches']}: columns {legend}; rows {rows}")
    return out


if __name__ == "__main__":
    main()
