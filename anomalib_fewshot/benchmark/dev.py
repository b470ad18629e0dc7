"""Development grids (``evaluate_on: dev``): every job is evaluated on its dataset's development split.

The split (:mod:`anomalib_fewshot.data.dev_split`) is built once per dataset, before the first job that needs it, in
``<dev_cache>/<generator version>/<dataset name>/<category>`` (``dev_cache`` from the grid YAML, default
``benchmark_results/dev_splits``), from the dataset's normal training images only (an MVTec-layout dataset's
``train/good``, a ``Folder``'s normal images less those anomalib holds out for test: :mod:`.datasets`); its
``foreign`` defects take their texture from the normal training images of the grid's *other* datasets (a procedural
texture when the grid has one dataset), or of the datasets its ``dev_foreign`` list names: a dataset added to a grid
later then leaves the existing splits as they were (their foreign pool does not grow). A split already built from
another foreign pool than the grid now asks for is an error naming its folder, never silently reused. A job then
reads that folder instead of the dataset: it trains on the usual seeded shots (the folder holds every training image
under its own name) and tests, and validates, on the development split. Nothing in a development grid opens a test
image of a dataset.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from anomalib_fewshot.benchmark.datasets import training_images
from anomalib_fewshot.data.defects import GENERATOR_VERSION
from anomalib_fewshot.data.dev_split import (
    DEFAULT_CAP,
    EXCLUDED_MAX_K,
    EXCLUDED_SEEDS,
    MANIFEST,
    build_dev_split,
)
from anomalib_fewshot.errors import InvalidArgumentError

DEFAULT_CACHE = Path("benchmark_results/dev_splits")
#: Foreign images per dataset (a seeded draw from the other datasets' normal training images).
FOREIGN_IMAGES = 32


def dev_root(config: dict[str, Any], dataset: str) -> Path:
    """Where the development split of ``dataset`` lives (the root a job's datamodule reads)."""
    return Path(config.get("dev_cache") or DEFAULT_CACHE) / GENERATOR_VERSION / dataset


def _foreign_sources(datasets: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """The datasets whose normal training images give ``name``'s foreign textures (``dev_foreign`` or all others)."""
    by_name = {dataset["name"]: dataset for dataset in datasets}
    wanted = by_name[name].get("dev_foreign")
    if wanted is None:
        return [dataset for dataset in datasets if dataset["name"] != name]
    unknown = [other for other in wanted if other not in by_name or other == name]
    if unknown:
        msg = f"dataset {name}: dev_foreign names {unknown}, not another dataset of this grid ({sorted(by_name)})"
        raise InvalidArgumentError(msg)
    return [by_name[other] for other in wanted]


def _foreign_images(datasets: list[dict[str, Any]], name: str, seed: int) -> list[str]:
    others = [image for dataset in _foreign_sources(datasets, name) for image in training_images(dataset)]
    if not others:
        return []
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(others), generator=generator)[:FOREIGN_IMAGES].tolist()
    return [others[i] for i in order]


def ensure_dev_splits(config: dict[str, Any], names: set[str]) -> dict[str, Path]:
    """Build the development split of every dataset in ``names`` unless it exists; return their roots by name."""
    datasets = config["grid"]["datasets"]
    options = config.get("dev_split") or {}
    roots = {}
    for dataset in datasets:
        name = dataset["name"]
        if name not in names:
            continue
        if dataset.get("datamodule", "MVTecAD") not in ("MVTecAD", "Folder"):
            msg = (
                f"dataset {name}: a development split is built from an MVTec-layout or Folder dataset; datamodule "
                f"{dataset['datamodule']}"
            )
            raise InvalidArgumentError(msg)
        root = dev_root(config, name)
        seed = int(options.get("seed", 0))
        foreign = _foreign_images(datasets, name, seed)
        manifest = root / dataset["category"] / MANIFEST
        if manifest.is_file():
            built = json.loads(manifest.read_text()).get("foreign_images", [])
            if [Path(p).resolve() for p in built] != [Path(p).resolve() for p in foreign]:
                msg = (
                    f"dataset {name}: the development split in '{manifest.parent}' was built from other foreign "
                    "images than this grid's datasets give it (a dataset added or removed?). Keep the old pool with "
                    "the dataset's dev_foreign list, or delete that folder to rebuild the split"
                )
                raise InvalidArgumentError(msg)
        else:
            print(f"building the development split of {name} in {root} (once)")
            build_dev_split(
                training_images(dataset),
                root,
                dataset["category"],
                foreign_images=foreign,
                cap=int(options.get("cap", DEFAULT_CAP)),
                seed=seed,
                excluded_seeds=[int(v) for v in options.get("exclude_seeds", EXCLUDED_SEEDS)],
                excluded_max_k=int(options.get("exclude_max_k", EXCLUDED_MAX_K)),
            )
        roots[name] = root
    return roots


def on_dev_split(job: dict[str, Any], roots: dict[str, Path]) -> dict[str, Any]:
    """The job reading its dataset's development split (MVTec layout: root replaced, generator version recorded)."""
    root = str(roots[job["dataset"]].resolve())
    return {**job, "root": root, "datamodule": "MVTecAD", "folder": None, "dev_generator": GENERATOR_VERSION}
