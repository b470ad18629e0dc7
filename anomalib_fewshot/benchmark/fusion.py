r"""PCSNet's fused map: how its two branches are weighted, screened on saved *development* checkpoints.

    python -m anomalib_fewshot.benchmark.fusion --jobs benchmark_results/dev_jobs --variant pcsnet_lite \\
        --output docs/benchmarks/dev/pcsnet/fusion

PCSNet's ``cas+prototype`` map is ``(c − μ_c)/σ_c + (p − μ_p)/σ_p``: the smoothed CAS map ``c`` and the smoothed
nearest-prototype distance ``p``, each standardised by statistics of good images. For rankings only the ratio
``σ_c/σ_p`` matters, so every rule is one mixing weight ``a`` of the prototype branch in
``(1 − a)·z_c + a·z_p``, where ``z`` standardises by the statistics of normal views of the shots
(:func:`anomalib_fewshot.components.anomalies.normal_views`). For every development checkpoint of ``--variant`` (jobs
of ``configs/benchmark/dev.yaml``, read from ``--jobs``) this scores, on its development split only:

- the statistics **sources**: ``shots`` (the statistics stored in the checkpoint: the shots themselves) and
  ``views-<shift>`` (``--views`` normal views per shot, translated by up to ``<shift>`` grid cells, with the model's
  ``pair_jitter``), each with image AUROC, pixel AUROC and AUPRO;
- the **sweep** of ``a`` (``--weights``), image and pixel AUROC only, with the ``a`` each source amounts to: where
  each rule lands on the curve.

It writes ``sources.csv``, ``sweep.csv`` and ``sweep.png``. Nothing reads a test split (a checkpoint whose data root
is not a development split is refused). Diagnosis for the PCSNet accuracy issue: a source becomes the lite default
only after the development grid measures it as a whole model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anomalib_fewshot.benchmark.branch_pairs import checkpoint_of
from anomalib_fewshot.benchmark.job import compute_metrics, evaluation_datamodule
from anomalib_fewshot.benchmark.store import write_rows
from anomalib_fewshot.components.anomalies import normal_views
from anomalib_fewshot.data.dev_split import MANIFEST
from anomalib_fewshot.errors import InvalidArgumentError


def development_maps(model: Any, root: str, category: str) -> dict[str, torch.Tensor]:
    """Smoothed CAS and prototype maps ``(N, H, W)`` of the development split, the model's own map, labels, masks."""
    if not (Path(root) / category / MANIFEST).is_file():
        msg = f"{root}/{category} is not a development split (no {MANIFEST}): this tool never reads a test split"
        raise InvalidArgumentError(msg)
    datamodule = evaluation_datamodule(model, root, category)
    transform = model.pre_processor.transform
    out: dict[str, list[torch.Tensor]] = {"cas": [], "prototype": [], "model": [], "label": [], "mask": []}
    with torch.no_grad():
        for batch in datamodule.test_dataloader():
            images, mask = transform(batch.image, batch.gt_mask)
            cas, prototype = model.model.branch_maps(images)
            out["cas"].append(cas[:, 0])
            out["prototype"].append(prototype[:, 0])
            out["model"].append(model.model(images).anomaly_map[:, 0])
            out["label"].append(batch.gt_label.reshape(-1).int())
            out["mask"].append(mask.reshape(cas[:, 0].shape).bool())
    return {name: torch.cat(values) for name, values in out.items()}


def mixing_weight(stats: tuple[float, float, float, float], reference: tuple[float, float, float, float]) -> float:
    """The weight ``a`` of the prototype branch that ``stats`` amount to, in ``reference``'s standardised units."""
    cas_scale = reference[1] / stats[1]
    prototype_scale = reference[3] / stats[3]
    return prototype_scale / (cas_scale + prototype_scale)


def mix(maps: dict[str, torch.Tensor], weight: float, reference: tuple[float, float, float, float]) -> torch.Tensor:
    """``(1 − a)·z_c + a·z_p`` with ``reference``'s statistics."""
    z_cas = (maps["cas"] - reference[0]) / reference[1]
    z_prototype = (maps["prototype"] - reference[2]) / reference[3]
    return (1.0 - weight) * z_cas + weight * z_prototype


def model_correlation(mixed: torch.Tensor, model_map: torch.Tensor) -> float | None:
    """Pearson correlation of a mixed map with the model's own map (1 when the mix reproduces the model's map)."""
    if model_map.shape != mixed.shape:
        return None
    stacked = torch.stack([mixed.flatten().double(), model_map.flatten().double()])
    return round(float(torch.corrcoef(stacked)[0, 1]), 6)


def _image_pixel_auroc(values: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor) -> dict[str, float]:
    from torchmetrics.functional.classification import binary_auroc

    return {
        "image_auroc": float(binary_auroc(values.flatten(1).amax(1), labels)),
        "pixel_auroc": float(binary_auroc(values.flatten(), masks.flatten().int())),
    }


def screen_checkpoint(
    ckpt: Path, shifts: list[float], views: int, weights: list[float]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Source rows and sweep rows of one development checkpoint."""
    from anomalib_fewshot.models import Pcsnet

    model = Pcsnet.load_from_checkpoint(ckpt, weights_only=True).eval()
    if model.model.anomaly_map != "cas+prototype":
        msg = f"{ckpt}: anomaly_map is '{model.model.anomaly_map}'; the fusion screen needs a cas+prototype model"
        raise InvalidArgumentError(msg)
    record = model.few_shot_record or {}
    shots = model.read_shot_images(record["shots"])
    shot_dir = Path(record["shots"][0]).parents[2]  # <root>/<category>/train/good/<file>
    root, category = str(shot_dir.parent), shot_dir.name
    grid_cell = float(model.hparams.image_size) / float(model.hparams.grid_size)
    maps = development_maps(model, root, category)
    stored = tuple(float(v) for v in model.model.map_statistics)
    sources: dict[str, tuple[float, float, float, float]] = {"shots": stored}
    for shift in shifts:
        images = normal_views(shots, views, shift * grid_cell, float(model.hparams.pair_jitter), seed=0)
        sources[f"views-{shift:g}"] = tuple(model.model.branch_statistics(images).tolist())
    reference = sources[f"views-{shifts[0]:g}"] if shifts else stored
    base = {"k_shot": record.get("k_shot"), "few_shot_seed": record.get("few_shot_seed"), "category": category}
    source_rows = []
    for name, stats in sources.items():
        weight = mixing_weight(stats, reference)
        mixed = mix(maps, weight, reference)
        metrics = compute_metrics(
            mixed.flatten(1).amax(1).numpy(), mixed.numpy(), maps["label"].numpy(), maps["mask"].numpy()
        )
        # self-check: the stored statistics' mix is the model's own map up to scale and offset
        matches = model_correlation(mixed, maps["model"]) if name == "shots" else None
        source_rows.append(
            {
                **base,
                "source": name,
                "weight": round(weight, 4),
                "mu_c": stats[0],
                "sigma_c": stats[1],
                "mu_p": stats[2],
                "sigma_p": stats[3],
                "model_correlation": matches,
                **{k: round(v, 4) for k, v in metrics.items()},
            }
        )
    sweep_rows = []
    for weight in weights:
        metrics = _image_pixel_auroc(mix(maps, weight, reference), maps["label"], maps["mask"])
        sweep_rows.append({**base, "weight": weight, **{k: round(v, 4) for k, v in metrics.items()}})
    return source_rows, sweep_rows


def _plot(sweep: list[dict[str, Any]], sources: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({(r["category"], r["k_shot"]) for r in sweep}, key=str)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for metric, axis in zip(("image_auroc", "pixel_auroc"), axes, strict=True):
        for key in keys:
            rows = [r for r in sweep if (r["category"], r["k_shot"]) == key]
            weights = sorted({r["weight"] for r in rows})
            means = [np.mean([r[metric] for r in rows if r["weight"] == w]) for w in weights]
            (line,) = axis.plot(weights, means, label=f"{key[0]} k={key[1]}")
            for name, marker in (("shots", "x"), ("views", "o")):
                picks = [r for r in sources if (r["category"], r["k_shot"]) == key and r["source"].startswith(name)]
                if picks:
                    axis.scatter([np.mean([r["weight"] for r in picks])], [np.mean([r[metric] for r in picks])],
                                 marker=marker, color=line.get_color())  # fmt: skip
        axis.set_xlabel("weight a of the prototype branch (0: CAS alone, 1: prototype alone)")
        axis.set_ylabel(f"{metric} (development, mean over seeds)")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("PCSNet fused map on the development split (x: shot statistics, o: view statistics)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Screen every development checkpoint of the variant; write the CSVs and the plot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=Path, default=Path("benchmark_results/dev_jobs"))
    parser.add_argument("--variant", default="pcsnet_lite")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--views", type=int, default=8, help="normal views per shot")
    parser.add_argument("--shifts", type=float, nargs="+", default=[1.0, 0.5, 2.0], help="in grid cells")
    parser.add_argument("--weights", type=float, nargs="+", default=[0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1])
    parser.add_argument("--k-shot", type=int, nargs="+", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    args = parser.parse_args(argv)
    sources, sweep = [], []
    args.output.mkdir(parents=True, exist_ok=True)
    for work in sorted(args.jobs.glob(f"Pcsnet_{args.variant}_*_dev")):
        result = json.loads((work / "result.json").read_text()) if (work / "result.json").is_file() else {}
        k, seed = (int(v) for v in work.name.removesuffix("_dev").rsplit("_", 2)[-2:])
        if (args.k_shot and k not in args.k_shot) or (args.seeds and seed not in args.seeds):
            continue
        ckpt = checkpoint_of(work)
        if ckpt is None:
            continue
        rows, curve = screen_checkpoint(ckpt, args.shifts, args.views, args.weights)
        for row in rows:
            row["job"] = work.name
            row["runner_image_auroc"] = result.get("image_auroc")
            print({key: row[key] for key in ("job", "source", "weight", "image_auroc", "pixel_auroc", "aupro")},
                  flush=True)  # fmt: skip
        for row in curve:
            row["job"] = work.name
        sources += rows
        sweep += curve
        write_rows(args.output / "sources.csv", sources)
        write_rows(args.output / "sweep.csv", sweep)
    if sweep:
        _plot(sweep, sources, args.output / "sweep.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
