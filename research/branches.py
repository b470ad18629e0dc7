"""Diagnose a trained checkpoint: image AUROC, pixel AUROC and AUPRO of each internal branch of a model on its own.

    python -m research.branches MODEL CKPT ROOT CATEGORY [--csv FILE]

``MODEL`` is a registered model with a branch hook (``ModelSpec.branch_maps``, kept in the model's folder as
``models/<name>/diagnostics.py``): ``Ed`` (reconstruction score, inter-correlation score and their product, the
model's map), ``Fdsl`` (the raw feature discrepancy ``|f − nn(f)|`` without any learned head, the global head before
and after the NAM, the LFE window branch, and the model's blend), ``Dfd`` (the Gaussian and Perlin discriminators,
each frequency path, and the token scale that the feature noise ``noise_std`` is compared with) or ``Pcsnet`` (the
CAS output, and the PFA prototype distances alone: mean 3-NN distance per position and 1-NN distance, smoothed like
the CAS map). Prints pixel AUROC, image AUROC (the map's maximum as the score) and AUPRO (FPR <= 0.3) of the raw maps
on the test folder of an MVTec-layout root, then the model's notes (``ModelSpec.branch_notes``); ``--csv`` also writes
the table. A checkpoint of any k works; ``ROOT`` is a dataset (its test split) or a development split
(``benchmark_results/dev_splits/<version>/<dataset>``, :mod:`anomalib_fewshot.benchmark.dev`), which the CSV's
``split`` column names. Diagnosis only: nothing here feeds back into a model's defaults.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from anomalib_fewshot.benchmark.job import compute_metrics, evaluation_datamodule
from anomalib_fewshot.benchmark.store import write_rows
from anomalib_fewshot.components.lifecycle.spec import ModelSpec
from anomalib_fewshot.data.dev_split import MANIFEST
from anomalib_fewshot.models import REGISTRY

#: The registered models that have a branch hook, by class name.
BRANCHES: dict[str, ModelSpec] = {name: spec for name, spec in REGISTRY.items() if spec.branch_maps is not None}


def branch_metrics(
    maps: dict[str, torch.Tensor], labels: torch.Tensor, masks: torch.Tensor
) -> dict[str, dict[str, float]]:
    """Image AUROC, pixel AUROC, AUPRO and F1-max of every branch's raw maps ``(N, H, W)`` (score: the map's max)."""
    target = masks.numpy()
    return {
        name: compute_metrics(values.flatten(1).amax(1).numpy(), values.numpy(), labels.numpy(), target)
        for name, values in maps.items()
    }


def branch_rows(
    spec: ModelSpec, model: Any, root: str | Path, category: str, checkpoint: str = "", dataset: str | None = None
) -> tuple[list[dict[str, Any]], str]:
    """Per-branch metrics of a fitted ``model`` on the test folder of ``root``; returns ``(rows, notes)``.

    The rows carry the model, branch, metrics, k, seed, ``split`` (``dev`` when ``root`` is a development split),
    ``dataset`` (default: the category), root, category and checkpoint.
    """
    datamodule = evaluation_datamodule(model, root, category)
    transform = model.pre_processor.transform
    maps: dict[str, list[torch.Tensor]] = {}
    masks, labels = [], []
    with torch.no_grad():
        for batch in datamodule.test_dataloader():
            images, mask = transform(batch.image, batch.gt_mask)
            for name, value in spec.branch_maps(model, images).items():
                maps.setdefault(name, []).append(value.reshape(len(images), *images.shape[-2:]).float())
            masks.append(mask.reshape(len(images), *images.shape[-2:]).bool())
            labels.append(batch.gt_label.int())
        note = ""
        if spec.branch_notes is not None:
            train = next(iter(datamodule.train_dataloader()))
            note = spec.branch_notes(model, transform(train.image[:8]))
    split = "dev" if (Path(root) / category / MANIFEST).is_file() else "test"
    metrics = branch_metrics({k: torch.cat(v) for k, v in maps.items()}, torch.cat(labels), torch.cat(masks))
    few_shot = model.few_shot_record or {}
    rows = [
        {
            "model": spec.name,
            "branch": name,
            **{k: round(v, 4) for k, v in values.items()},
            "k_shot": few_shot.get("k_shot"),
            "few_shot_seed": few_shot.get("few_shot_seed"),
            "split": split,
            "dataset": dataset or category,
            "root": str(root),
            "category": category,
            "checkpoint": checkpoint,
        }
        for name, values in metrics.items()
    ]
    return rows, note


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Print the per-branch table (and write it with ``--csv``); return its rows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=sorted(BRANCHES))
    parser.add_argument("ckpt")
    parser.add_argument("root")
    parser.add_argument("category")
    parser.add_argument("--csv", type=Path, default=None, help="also write the table to this CSV file")
    parser.add_argument("--dataset", default=None, help="dataset name written to the CSV (default: the category)")
    args = parser.parse_args(argv)
    spec = BRANCHES[args.model]
    model = spec.model_class.load_from_checkpoint(args.ckpt, weights_only=True).eval()
    rows, note = branch_rows(spec, model, args.root, args.category, args.ckpt, args.dataset)
    split = rows[0]["split"] if rows else "?"
    print(f"checkpoint: {args.ckpt}\ndata: {args.root} / {args.category} ({split} split)\n")
    print("| branch | pixel AUROC | image AUROC | AUPRO |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['branch']} | {row['pixel_auroc']:.3f} | {row['image_auroc']:.3f} | {row['aupro']:.3f} |")
    if note:
        print(f"\n{note}")
    if args.csv is not None:
        write_rows(args.csv, rows)
        print(f"\nwritten to {args.csv}")
    return rows


if __name__ == "__main__":
    main()
