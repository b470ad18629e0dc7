"""The development split: synthetic defects on good training images that are never shots (choosing without test).

A development split is built once per dataset and category from its *normal training images* alone:

1. The excluded images are the union of the seeded shots
   (:func:`~anomalib_fewshot.components.lifecycle.fewshot.select_shots`, the rule every fit uses) of seeds ``0..2``
   and ``k = 1..8``; the remaining images form the pool.
2. At most ``cap`` (200) pool images are drawn (seeded); half stay clean, half get one synthetic defect of the
   families in :mod:`anomalib_fewshot.data.defects` (cycled, with sizes cycled within a family) with its exact mask.
3. The split is written in MVTec layout to a cache folder, never into the user's dataset::

       <output>/<category>/train/good/        hard links to (or copies of) every original normal training image
                                              (same names, so the seeded shots are the test-split runs' shots)
       <output>/<category>/test/good/         the clean development images (hard links or copies)
       <output>/<category>/test/<family>/     the defective development images (PNG)
       <output>/<category>/ground_truth/<family>/<name>_mask.png
       <output>/<category>/dev_split.json     manifest: generator version, seeds, sources, one line per image
       <output>/gallery_<category>.png        defective images with their masks outlined (outside the layout:
                                              anomalib reads every image below the category folder)

   so ``MVTecAD(root=<output>, category=<category>)`` trains on the usual shots and tests (and validates) on the
   development split. A fit on *every* training image (``k_shot=None``) would see the development images: it is
   never run against a development split.

Nothing here reads a test image of the source dataset. ``python -m anomalib_fewshot.data.dev_split --help``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from anomalib_fewshot.components.io.atomic import atomic_write_bytes, atomic_write_json
from anomalib_fewshot.components.io.images import read_image
from anomalib_fewshot.components.lifecycle.fewshot import select_shots
from anomalib_fewshot.data.defects import FAMILIES, GENERATOR_VERSION, SIZES, DefectError, add_defect
from anomalib_fewshot.errors import InvalidArgumentError

#: Seeds and shot counts whose shots never enter a development split.
EXCLUDED_SEEDS: tuple[int, ...] = (0, 1, 2)
EXCLUDED_MAX_K = 8
#: Most development images per dataset and category (half clean, half defective).
DEFAULT_CAP = 200
MANIFEST = "dev_split.json"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def excluded_shots(
    train_images: Sequence[str | Path], seeds: Sequence[int] = EXCLUDED_SEEDS, max_k: int = EXCLUDED_MAX_K
) -> set[str]:
    """The union of the seeded shots for every seed in ``seeds`` and ``k = 1..max_k`` (as many as there are images)."""
    paths = [str(p) for p in train_images]
    return {
        shot for seed in seeds for k in range(1, min(max_k, len(paths)) + 1) for shot in select_shots(paths, k, seed)
    }


def development_pool(
    train_images: Sequence[str | Path],
    cap: int = DEFAULT_CAP,
    seed: int = 0,
    seeds: Sequence[int] = EXCLUDED_SEEDS,
    max_k: int = EXCLUDED_MAX_K,
) -> tuple[list[str], list[str]]:
    """``(clean, defective)``: up to ``cap`` seeded pool images that are never shots (sorted paths, disjoint halves).

    The shots excluded are those of every seed in ``seeds`` and ``k = 1..max_k`` (:func:`excluded_shots`).
    """
    paths = sorted(str(p) for p in train_images)
    excluded = excluded_shots(paths, seeds, max_k)
    pool = [p for p in paths if p not in excluded]
    if len(pool) < 2:
        msg = (
            f"only {len(pool)} of {len(paths)} normal training images are never shots (seeds {tuple(seeds)}, "
            f"k <= {max_k}): a development split needs at least 2; add normal images"
        )
        raise InvalidArgumentError(msg)
    generator = torch.Generator().manual_seed(seed)
    chosen = [pool[i] for i in torch.randperm(len(pool), generator=generator)[: min(cap, len(pool))].tolist()]
    half = len(chosen) // 2
    return sorted(chosen[:half]), sorted(chosen[half:])


def normal_training_images(root: Path, category: str) -> list[str]:
    """The normal training images of an MVTec-layout category: ``<root>/<category>/train/good/*``."""
    folder = Path(root) / category / "train" / "good"
    if not folder.is_dir():
        msg = f"no normal training images: '{folder}' is not a folder (expected MVTec layout root/category/train/good)"
        raise InvalidArgumentError(msg)
    images = sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        msg = f"'{folder}' holds no images ({', '.join(IMAGE_SUFFIXES)})"
        raise InvalidArgumentError(msg)
    return images


def link_or_copy(target: str | Path, link: Path) -> None:
    """A hard link to ``target``, or a copy across file systems (anomalib rejects links that leave the root)."""
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    try:
        os.link(target, link)
    except OSError:
        shutil.copyfile(target, link)


def _png_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def build_dev_split(
    train_images: Sequence[str | Path],
    output: Path,
    category: str,
    foreign_images: Sequence[str | Path] = (),
    cap: int = DEFAULT_CAP,
    seed: int = 0,
    max_side: int | None = 1024,
    excluded_seeds: Sequence[int] = EXCLUDED_SEEDS,
    excluded_max_k: int = EXCLUDED_MAX_K,
) -> Path:
    """Write the development split of ``train_images`` to ``output/category`` (see the module docstring).

    Args:
        train_images: every normal training image of the dataset and category.
        output: the cache folder (never the dataset itself).
        category: the category name of the written layout.
        foreign_images: images of *another* dataset for the ``foreign`` family (a procedural texture if empty).
        cap: most development images (half clean, half defective).
        seed: the split's seed (pool draw and defects).
        max_side: defective images larger than this are drawn at their size but the foreign images are read at
            most this large (memory).
        excluded_seeds: the seeds whose shots never enter the split.
        excluded_max_k: the largest k whose shots never enter the split.

    Returns:
        The category folder ``output/category``.

    """
    category_dir = Path(output) / category
    sources = [Path(p).resolve() for p in train_images]
    if not sources:
        msg = "a development split needs normal training images, got none"
        raise InvalidArgumentError(msg)
    common = Path(os.path.commonpath([str(p.parent) for p in sources]))
    protected = common.parents[1] if common.parts[-2:] == ("train", "good") else common  # MVTec: root/category
    target = category_dir.resolve()
    if target == protected or protected in target.parents:
        msg = f"the development split must not be written inside the dataset '{protected}': '{category_dir}'"
        raise InvalidArgumentError(msg)
    clean, defective = development_pool([str(p) for p in sources], cap, seed, excluded_seeds, excluded_max_k)
    rng = np.random.default_rng(seed)
    foreign = [read_image(p, max_side=max_side) for p in foreign_images[:32]]
    for path in sources:
        link_or_copy(path, category_dir / "train" / "good" / path.name)
    records: list[dict[str, Any]] = []
    for path in clean:
        link_or_copy(path, category_dir / "test" / "good" / Path(path).name)
        records.append({"file": f"test/good/{Path(path).name}", "source": path, "family": "good", "size": None})
    sizes = list(SIZES)
    skipped: list[dict[str, Any]] = []
    for index, path in enumerate(defective):
        family = FAMILIES[index % len(FAMILIES)]
        size = sizes[(index // len(FAMILIES)) % len(sizes)]
        image = read_image(path)
        try:
            defect = add_defect(image, family, size, rng, foreign)
        except DefectError as error:
            skipped.append({"source": path, "family": family, "size": size, "reason": str(error)})
            continue
        name = f"{Path(path).stem}.png"
        atomic_write_bytes(category_dir / "test" / family / name, _png_bytes(_to_uint8(defect.image)))
        mask = (defect.mask.numpy() * 255).astype(np.uint8)
        atomic_write_bytes(category_dir / "ground_truth" / family / f"{Path(path).stem}_mask.png", _png_bytes(mask))
        records.append({"file": f"test/{family}/{name}", "source": path, "family": family, "size": size})
    counts: dict[str, int] = {}
    for record in records:
        counts[record["family"]] = counts.get(record["family"], 0) + 1
    manifest = {
        "generator_version": GENERATOR_VERSION,
        "category": category,
        "seed": seed,
        "cap": cap,
        "excluded_shots": {"seeds": list(excluded_seeds), "max_k": excluded_max_k},
        "n_train_images": len(sources),
        "counts": counts,
        "foreign_images": [str(p) for p in foreign_images[:32]],
        "images": records,
        "skipped": skipped,  # defects that stayed invisible after every draw (e.g. a blur on a flat surface)
    }
    atomic_write_json(category_dir / MANIFEST, manifest)
    write_gallery(category_dir, records)
    return category_dir


def outlined(image: torch.Tensor, mask: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """``image`` ``(3, H, W)`` in ``[0, 1]`` with the edge of ``mask`` (``(1, H, W)`` or ``(H, W)``) drawn in red.

    ``size`` first resizes both to ``size x size`` (bilinear image, nearest mask).
    """
    import kornia.morphology as KM

    mask = mask.reshape(1, *mask.shape[-2:]).float()
    image = image.float()
    if size is not None:
        image = torch.nn.functional.interpolate(image[None], size=(size, size), mode="bilinear")[0]
        mask = torch.nn.functional.interpolate(mask[None], size=(size, size), mode="nearest")[0]
    edge = KM.gradient((mask > 0.5)[None].float(), torch.ones(3, 3))[0, 0] > 0
    image = image.clone()
    image[:, edge] = torch.tensor([1.0, 0.0, 0.0])[:, None]
    return image


def write_png(path: Path, image: torch.Tensor) -> Path:
    """Write a ``(3, H, W)`` image in ``[0, 1]`` as a PNG (atomically)."""
    atomic_write_bytes(path, _png_bytes(_to_uint8(image)))
    return path


def write_gallery(category_dir: Path, records: Sequence[dict[str, Any]], per_family: int = 3, tile: int = 160) -> Path:
    """A PNG grid: ``per_family`` defective images of each family (rows), the mask outlined in red."""
    rows = []
    for family in FAMILIES:
        chosen = [r for r in records if r["family"] == family][:per_family]
        tiles = []
        for record in chosen:
            image = read_image(category_dir / record["file"])
            stem = Path(record["file"]).stem
            mask = read_image(category_dir / "ground_truth" / family / f"{stem}_mask.png")[:1]
            tiles.append(outlined(image, mask, tile))
        tiles += [torch.zeros(3, tile, tile)] * (per_family - len(tiles))
        rows.append(torch.cat(tiles, dim=2))
    return write_png(category_dir.parent / f"gallery_{category_dir.name}.png", torch.cat(rows, dim=1))


def main(argv: list[str] | None = None) -> int:
    """``python -m anomalib_fewshot.data.dev_split --root R --category C --output DIR [--foreign DIR]``."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="MVTec-layout dataset root")
    parser.add_argument("--category", required=True)
    parser.add_argument("--output", type=Path, required=True, help="cache folder (never inside the dataset)")
    parser.add_argument("--foreign", type=Path, default=None, help="a folder of images of another dataset")
    parser.add_argument("--cap", type=int, default=DEFAULT_CAP)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    foreign = (
        sorted(str(p) for p in args.foreign.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if args.foreign else []
    )
    folder = build_dev_split(
        normal_training_images(args.root, args.category), args.output, args.category, foreign, args.cap, args.seed
    )
    manifest = json.loads((folder / MANIFEST).read_text())
    print(json.dumps({"folder": str(folder), "counts": manifest["counts"]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
