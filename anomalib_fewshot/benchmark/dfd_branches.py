"""Diagnose a trained DFD checkpoint: each discriminator and frequency path on its own, and the token scale.

    python -m anomalib_fewshot.benchmark.dfd_branches CKPT ROOT CATEGORY

Prints, for the test split of an MVTec-layout dataset, pixel and image AUROC of the raw maps of every branch
(Gaussian, Perlin) and path (low, high), and the standard deviation of the aggregated and adapted tokens of
the first 8 *training* images (the scale that the feature noise ``noise_std`` is compared with). Diagnosis
only: nothing here feeds back into a model's defaults.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from anomalib.data import MVTecAD
from torchmetrics.classification import BinaryAUROC

from anomalib_fewshot.models import Dfd


def _unit(x: torch.Tensor) -> torch.Tensor:
    return (x - x.min()) / (x.max() - x.min()).clamp_min(1e-12)


def main(argv: list[str] | None = None) -> None:
    """Print the per-branch table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpt")
    parser.add_argument("root")
    parser.add_argument("category")
    args = parser.parse_args(argv)
    model = Dfd.load_from_checkpoint(args.ckpt, weights_only=True).eval()
    net = model.model
    datamodule = MVTecAD(root=args.root, category=args.category, num_workers=0, eval_batch_size=16)
    datamodule.setup()
    transform = model.pre_processor.transform
    maps: dict[str, list[torch.Tensor]] = {}
    masks, labels = [], []
    with torch.no_grad():
        for batch in datamodule.test_dataloader():
            images, mask = transform(batch.image, batch.gt_mask)
            size = images.shape[-2:]
            tokens = net.embed(net.backbone_features(images))
            for name, disc in (("gaussian", net.gaussian), ("perlin", net.perlin)):
                if disc is None:
                    continue
                logits = (-disc(tokens)).reshape(-1, 1, *net.grid)
                per_path = net.smoothing(F.interpolate(logits, size=size, mode="bilinear", align_corners=False))
                per_path = per_path.reshape(net.num_paths, len(images), *size)
                maps.setdefault(name, []).append(per_path.sum(0))
                if net.num_paths == 2:
                    maps.setdefault(f"{name}/low", []).append(per_path[0])
                    maps.setdefault(f"{name}/high", []).append(per_path[1])
            masks.append(mask.reshape(len(images), *size).bool())
            labels.append(batch.gt_label.int())
        train = next(iter(datamodule.train_dataloader()))
        features = net.backbone_features(transform(train.image[:8]))
        aggregated = net.aggregate(features)
        adapted = net.adaptor(aggregated)
    pixel_target = torch.cat(masks).flatten().int()
    image_target = torch.cat(labels)
    print(f"checkpoint: {args.ckpt}\ndata: {args.root} / {args.category} (test split)\n")
    print("| branch | pixel AUROC | image AUROC |\n|---|---|---|")
    for name, values in maps.items():
        stacked = torch.cat(values)
        pixel = BinaryAUROC()(_unit(stacked).flatten(), pixel_target)
        image = BinaryAUROC()(_unit(stacked.flatten(1).amax(1)), image_target)
        print(f"| {name} | {pixel:.3f} | {image:.3f} |")
    print(f"\ntoken std on 8 training images: aggregated {aggregated.std():.2f}, adapted {adapted.std():.2f}")
    print(f"feature noise std (noise_std): {model.hparams.noise_std}")


if __name__ == "__main__":
    main()
