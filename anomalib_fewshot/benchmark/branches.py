"""Diagnose a trained checkpoint: the AUROC of each internal branch of a model on its own.

    python -m anomalib_fewshot.benchmark.branches MODEL CKPT ROOT CATEGORY

``MODEL`` is a registered model with a branch hook (``ModelSpec.branch_maps``, kept in the model's folder as
``models/<name>/diagnostics.py``): ``Ed`` (reconstruction score, inter-correlation score and their product, the
model's map), ``Fdsl`` (the raw feature discrepancy ``|f − nn(f)|`` without any learned head, the global head before
and after the NAM, the LFE window branch, and the model's blend), ``Dfd`` (the Gaussian and Perlin discriminators,
each frequency path, and the token scale that the feature noise ``noise_std`` is compared with) or ``Pcsnet`` (the
CAS output, and the PFA prototype distances alone: mean 3-NN distance per position and 1-NN distance, smoothed like
the CAS map). Prints pixel and image AUROC of the raw maps on the test split of an MVTec-layout dataset, then the
model's notes (``ModelSpec.branch_notes``). Diagnosis only: nothing here feeds back into a model's defaults.
"""

from __future__ import annotations

import argparse

import torch
from anomalib.data import MVTecAD
from torchmetrics.classification import BinaryAUROC

from anomalib_fewshot.components.spec import ModelSpec
from anomalib_fewshot.models import REGISTRY

#: The registered models that have a branch hook, by class name.
BRANCHES: dict[str, ModelSpec] = {name: spec for name, spec in REGISTRY.items() if spec.branch_maps is not None}


def _unit(x: torch.Tensor) -> torch.Tensor:
    return (x - x.min()) / (x.max() - x.min()).clamp_min(1e-12)


def main(argv: list[str] | None = None) -> None:
    """Print the per-branch table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=sorted(BRANCHES))
    parser.add_argument("ckpt")
    parser.add_argument("root")
    parser.add_argument("category")
    args = parser.parse_args(argv)
    spec = BRANCHES[args.model]
    model = spec.model_class.load_from_checkpoint(args.ckpt, weights_only=True).eval()
    datamodule = MVTecAD(root=args.root, category=args.category, num_workers=0, eval_batch_size=16)
    datamodule.setup()
    transform = model.pre_processor.transform
    maps: dict[str, list[torch.Tensor]] = {}
    masks, labels = [], []
    with torch.no_grad():
        for batch in datamodule.test_dataloader():
            images, mask = transform(batch.image, batch.gt_mask)
            for name, value in spec.branch_maps(model, images).items():
                maps.setdefault(name, []).append(value.reshape(len(images), *images.shape[-2:]))
            masks.append(mask.reshape(len(images), *images.shape[-2:]).bool())
            labels.append(batch.gt_label.int())
        note = ""
        if spec.branch_notes is not None:
            train = next(iter(datamodule.train_dataloader()))
            note = spec.branch_notes(model, transform(train.image[:8]))
    pixel_target = torch.cat(masks).flatten().int()
    image_target = torch.cat(labels)
    print(f"checkpoint: {args.ckpt}\ndata: {args.root} / {args.category} (test split)\n")
    print("| branch | pixel AUROC | image AUROC |\n|---|---|---|")
    for name, values in maps.items():
        stacked = torch.cat(values)
        pixel = BinaryAUROC()(_unit(stacked).flatten(), pixel_target)
        image = BinaryAUROC()(_unit(stacked.flatten(1).amax(1)), image_target)
        print(f"| {name} | {pixel:.3f} | {image:.3f} |")
    if note:
        print(f"\n{note}")


if __name__ == "__main__":
    main()
