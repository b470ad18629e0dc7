"""Diagnose a trained checkpoint: the AUROC of each internal branch of a model on its own.

    python -m anomalib_fewshot.benchmark.branches MODEL CKPT ROOT CATEGORY

``MODEL`` is ``Ed`` (reconstruction score, inter-correlation score and their product, the model's map),
``Fdsl`` (the raw feature discrepancy ``|f − nn(f)|`` without any learned head, the global head before and
after the NAM, the LFE window branch, and the model's blend), ``Dfd`` (the Gaussian and Perlin
discriminators, each frequency path, and the token scale that the feature noise ``noise_std`` is compared
with) or ``Pcsnet`` (the CAS output, and the PFA prototype distances alone: mean 3-NN distance per position
and 1-NN distance, smoothed like the CAS map). Prints pixel and image AUROC of the raw maps on the test split
of an MVTec-layout dataset. Diagnosis only: nothing here feeds back
into a model's defaults.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torch.nn.functional as F
from anomalib.data import MVTecAD
from torchmetrics.classification import BinaryAUROC

import anomalib_fewshot.models as plugin_models


def _unit(x: torch.Tensor) -> torch.Tensor:
    return (x - x.min()) / (x.max() - x.min()).clamp_min(1e-12)


def _dfd_maps(model: plugin_models.Dfd, images: torch.Tensor) -> dict[str, torch.Tensor]:
    net, size = model.model, images.shape[-2:]
    tokens = net.embed(net.backbone_features(images))
    maps = {}
    for name, disc in (("gaussian", net.gaussian), ("perlin", net.perlin)):
        if disc is None:
            continue
        logits = (-disc(tokens)).reshape(-1, 1, *net.grid)
        per_path = net.smoothing(F.interpolate(logits, size=size, mode="bilinear", align_corners=False))
        per_path = per_path.reshape(net.num_paths, len(images), *size)
        maps[name] = per_path.sum(0)
        if net.num_paths == 2:
            maps[f"{name}/low"], maps[f"{name}/high"] = per_path[0], per_path[1]
    return maps


def _dfd_notes(model: plugin_models.Dfd, train_images: torch.Tensor) -> str:
    net = model.model
    aggregated = net.aggregate(net.backbone_features(train_images))
    adapted = net.adaptor(aggregated)
    return (
        f"token std on {len(train_images)} training images: aggregated {aggregated.std():.2f}, "
        f"adapted {adapted.std():.2f}\nfeature noise std (noise_std): {model.hparams.noise_std}"
    )


def _pcsnet_maps(model: plugin_models.Pcsnet, images: torch.Tensor) -> dict[str, torch.Tensor]:
    net, size = model.model, images.shape[-2:]
    descriptors = net.describe(images)
    nearest = net.nearest(net.distances(descriptors), max(net.num_nearest, model.loss.neighbors))
    maps = {"cas": net.smoothing(net.segment(descriptors, nearest, size))[:, 0]} if net.cas is not None else {}
    grid = (net.grid_size, net.grid_size)
    for name, values in (("pfa_3nn_mean", nearest[..., : model.loss.neighbors].mean(-1)), ("pfa_1nn", nearest[..., 0])):
        grid_map = values.reshape(-1, 1, *grid)
        maps[name] = net.smoothing(F.interpolate(grid_map, size=size, mode="bilinear", align_corners=False))[:, 0]
    return maps


def _pcsnet_notes(model: plugin_models.Pcsnet, train_images: torch.Tensor) -> str:
    net, loss = model.model, model.loss
    nearest = net.nearest(net.distances(net.describe(train_images)), loss.neighbors).flatten()
    radius = float(net.radius)
    hinges = f"r² = {radius**2:.4g} (L_NFC hinge), (r + α)² = {(radius + loss.alpha) ** 2:.4g} (L_AFS hinge)"
    spread = f"median {nearest.median():.4g}, 5th percentile {nearest.quantile(0.05):.4g}"
    return (
        f"learned radius r = {radius:.4g}: {hinges}\n"
        f"{loss.neighbors}-NN prototype distance on {len(train_images)} training images: {spread}"
    )


def _ed_maps(model: plugin_models.Ed, images: torch.Tensor) -> dict[str, torch.Tensor]:
    from anomalib_fewshot.models.ed.torch_model import reconstruction_score

    net, size = model.model, images.shape[-2:]
    level_tokens = net.tokens(images)
    parts: dict[str, list[torch.Tensor]] = {}
    outputs = net.reconstruct(level_tokens)
    for level, (tokens, (reconstruction, attention), grid) in enumerate(zip(level_tokens, outputs, net.grids,
                                                                            strict=True)):  # fmt: skip
        rec = reconstruction_score(tokens, reconstruction)
        full = net.level_score(tokens, reconstruction, attention)
        inter = full / rec.clamp_min(1e-12)
        for name, value in (("rec", rec), ("inter", inter), ("rec_x_inter", full)):
            grid_map = F.interpolate(value.reshape(-1, 1, *grid), size=size, mode="bilinear", align_corners=True)
            parts.setdefault(name, []).append(grid_map)
            parts[f"{name}_level{level}"] = [grid_map]
    return {name: net.smoothing(torch.stack(maps).mean(0))[:, 0] for name, maps in parts.items()}


def _ed_notes(model: plugin_models.Ed, train_images: torch.Tensor) -> str:
    del train_images
    return f"levels: {len(model.model.levels)}, grids {model.model.grids}"


def _fdsl_maps(model: plugin_models.Fdsl, images: torch.Tensor) -> dict[str, torch.Tensor]:
    net, size = model.model, images.shape[-2:]
    grid = (net.grid, net.grid)

    def upsample(level_maps: list[torch.Tensor]) -> torch.Tensor:
        mean = torch.stack(level_maps, dim=1).mean(1, keepdim=True)
        return F.interpolate(mean, size=size, mode="bilinear", align_corners=True)[:, 0]

    residuals = net.residuals(net.level_tokens(images), net.banks())
    raw = net.head_maps(residuals, net.grid)
    maps = {
        "fd_residual_norm": upsample([r.norm(dim=-1).reshape(-1, *grid) for r in residuals]),
        "head_global": upsample([r[:, 1] for r in raw]),
        "head_global_nam": upsample([net.refine(r)[:, 1] for r in raw]),
    }
    if net.lfe:
        maps["lfe_windows"] = upsample([m[:, 1] for m in net.window_level_maps(images)])
    maps["model"] = net(images).anomaly_map[:, 0]
    return maps


def _fdsl_notes(model: plugin_models.Fdsl, train_images: torch.Tensor) -> str:
    del train_images
    net = model.model
    banks = ", ".join(str(tuple(b.shape)) for b in net.banks())
    lfe = f"on (weight {net.lfe_weight})" if net.lfe else "off"
    return f"levels: {net.num_levels}, grid {net.grid}, banks {banks}, LFE {lfe}, score mode {net.score_mode}"


BRANCHES: dict[str, tuple[Callable, Callable]] = {
    "Fdsl": (_fdsl_maps, _fdsl_notes),
    "Ed": (_ed_maps, _ed_notes),
    "Dfd": (_dfd_maps, _dfd_notes),
    "Pcsnet": (_pcsnet_maps, _pcsnet_notes),
}


def main(argv: list[str] | None = None) -> None:
    """Print the per-branch table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=sorted(BRANCHES))
    parser.add_argument("ckpt")
    parser.add_argument("root")
    parser.add_argument("category")
    args = parser.parse_args(argv)
    branch_maps, notes = BRANCHES[args.model]
    model = getattr(plugin_models, args.model).load_from_checkpoint(args.ckpt, weights_only=True).eval()
    datamodule = MVTecAD(root=args.root, category=args.category, num_workers=0, eval_batch_size=16)
    datamodule.setup()
    transform = model.pre_processor.transform
    maps: dict[str, list[torch.Tensor]] = {}
    masks, labels = [], []
    with torch.no_grad():
        for batch in datamodule.test_dataloader():
            images, mask = transform(batch.image, batch.gt_mask)
            for name, value in branch_maps(model, images).items():
                maps.setdefault(name, []).append(value.reshape(len(images), *images.shape[-2:]))
            masks.append(mask.reshape(len(images), *images.shape[-2:]).bool())
            labels.append(batch.gt_label.int())
        train = next(iter(datamodule.train_dataloader()))
        note = notes(model, transform(train.image[:8]))
    pixel_target = torch.cat(masks).flatten().int()
    image_target = torch.cat(labels)
    print(f"checkpoint: {args.ckpt}\ndata: {args.root} / {args.category} (test split)\n")
    print("| branch | pixel AUROC | image AUROC |\n|---|---|---|")
    for name, values in maps.items():
        stacked = torch.cat(values)
        pixel = BinaryAUROC()(_unit(stacked).flatten(), pixel_target)
        image = BinaryAUROC()(_unit(stacked.flatten(1).amax(1)), image_target)
        print(f"| {name} | {pixel:.3f} | {image:.3f} |")
    print(f"\n{note}")


if __name__ == "__main__":
    main()
