r"""Two-branch fused maps (PCSNet, DFD): how the branches are weighted, screened on saved *development* checkpoints.

    python -m research.fusion --jobs benchmark_results/dev_jobs --variant pcsnet_lite \\
        --output docs/benchmarks/dev/pcsnet/fusion
    python -m research.fusion --model Dfd --jobs benchmark_results/dfd_dev_jobs \\
        --variant dfd_lite-e20 --output docs/benchmarks/dev/dfd/fusion

Both models fuse two branch maps after an affine normalisation fitted on training data: PCSNet's ``cas+prototype``
map is ``(c − μ_c)/σ_c + (p − μ_p)/σ_p`` (the smoothed CAS map ``c`` and nearest-prototype distance ``p``, statistics
of the shots); DFD's map is the mean of ``a_b·S_b − b_b`` over its Gaussian and Perlin discriminators (``a_b`` the mean
inverse span of the branch's maps on the training pool,
:class:`~anomalib_fewshot.components.nn.scoring.BranchNormalizer`),
i.e. ``(S_b − μ_b)/σ_b`` with ``σ_b = 1/a_b`` and ``μ_b = b_b/a_b``. For rankings only the ratio of the two ``σ``
matters, so every rule is one mixing weight ``a`` of the second branch in ``(1 − a)·z_1 + a·z_2``, where ``z``
standardises by the statistics of normal views of the shots
(:func:`anomalib_fewshot.components.anomalies.normal_views`). For every development checkpoint of ``--variant`` (jobs
read from ``--jobs``) this scores, on its development split only:

- the statistics **sources**: the checkpoint's own statistics (the model's own map; ``shots`` for PCSNet, ``pool``
  for DFD) and, per shift,
  ``views-<shift>`` (``--views`` normal views per shot, translated by up to ``<shift>`` grid cells), standardised by
  their mean and standard deviation; for DFD also ``views-<shift>-fit``, the model's own normaliser rule fitted on
  those views instead of the training pool. Each with image AUROC (the model's score rule where it has one for the
  source, else the fused map's maximum), pixel AUROC and AUPRO;
- the **sweep** of ``a`` (``--weights``), image and pixel AUROC only (image score: the fused map's maximum), with the
  ``a`` each source amounts to: where each rule lands on the curve.

It writes ``sources.csv``, ``sweep.csv`` and ``sweep.png``. Nothing reads a test split (a checkpoint whose data root
is not a development split is refused). Diagnosis for the accuracy issues: a source becomes a lite default only
after the development grid measures it as a whole model.
"""

from __future__ import annotations

import argparse
import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anomalib_fewshot.benchmark.job import compute_metrics, evaluation_datamodule
from anomalib_fewshot.benchmark.store import write_rows
from anomalib_fewshot.components.anomalies import normal_views
from anomalib_fewshot.data.dev_split import MANIFEST
from anomalib_fewshot.errors import InvalidArgumentError
from research.branch_pairs import checkpoint_of

#: ``(μ_1, σ_1, μ_2, σ_2)``: the affine statistics of the two branches.
Stats = tuple[float, float, float, float]


@dataclass(frozen=True)
class Source:
    """One normalisation rule: its statistics and, where the model has a score rule for it, the image scores."""

    stats: Stats
    scores: torch.Tensor | None = None


@dataclass(frozen=True)
class FusionSpec:
    """How the screen reads one model's two branches.

    Attributes:
        branches: names of the two branches (the weight ``a`` is the second's).
        short: their short names in the CSV columns (``mu_<short>``, ``sigma_<short>``).
        stored_name: the name of the checkpoint's own source (where its statistics were fitted).
        scores: ``(net, maps) -> (N,)``, the model's image score rule with ``net``'s statistics, when it is not the
            fused map's maximum (the stored source is scored with it).
        maps: ``(model, images) -> (first, second)`` raw smoothed branch maps ``(B, H, W)``.
        stored: the checkpoint's own statistics.
        sources: ``(model, views, maps) -> {suffix: Source}``: the rules fitted on ``views`` (``maps``: the
            development maps, for score rules); the suffix ``""`` is the mean/std standardisation.
        cell: pixels per grid cell (the unit of ``--shifts``).
        jitter: brightness/contrast jitter of the views.
        check: raises when a checkpoint cannot be screened.

    """

    branches: tuple[str, str]
    short: tuple[str, str]
    stored_name: str
    scores: Callable[[Any, dict[str, torch.Tensor]], torch.Tensor] | None
    maps: Callable[[Any, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    stored: Callable[[Any], Stats]
    sources: Callable[[Any, torch.Tensor, dict[str, torch.Tensor]], dict[str, Source]]
    cell: Callable[[Any], float]
    jitter: Callable[[Any], float]
    check: Callable[[Any, Path], None] = lambda model, ckpt: None


def _mean_std(first: torch.Tensor, second: torch.Tensor) -> Stats:
    stats = (first.mean(), first.std().clamp_min(1e-6), second.mean(), second.std().clamp_min(1e-6))
    return tuple(float(v) for v in stats)


def _batched_maps(spec: FusionSpec, model: Any, images: torch.Tensor, chunk: int = 8) -> tuple[torch.Tensor, ...]:
    pairs = [spec.maps(model, images[i : i + chunk]) for i in range(0, len(images), chunk)]
    return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])


# ---------------------------------------------------------------------------------------------------- PCSNet
def _pcsnet_maps(model: Any, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    cas, prototype = model.model.branch_maps(images)
    return cas[:, 0], prototype[:, 0]


def _pcsnet_check(model: Any, ckpt: Path) -> None:
    if model.model.anomaly_map != "cas+prototype":
        msg = f"{ckpt}: anomaly_map is '{model.model.anomaly_map}'; the fusion screen needs a cas+prototype model"
        raise InvalidArgumentError(msg)


PCSNET = FusionSpec(
    branches=("cas", "prototype"),
    short=("c", "p"),
    stored_name="shots",
    scores=None,
    maps=_pcsnet_maps,
    stored=lambda model: tuple(float(v) for v in model.model.map_statistics),
    sources=lambda model, views, maps: {"": Source(tuple(model.model.branch_statistics(views).tolist()))},
    cell=lambda model: float(model.hparams.image_size) / float(model.hparams.grid_size),
    jitter=lambda model: float(model.hparams.pair_jitter),
    check=_pcsnet_check,
)


# ---------------------------------------------------------------------------------------------------- DFD
def _dfd_maps(model: Any, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    net = model.model
    maps = net.branch_maps(net.embed(net.backbone_features(images)), images.shape[-2:])
    return maps["gaussian"][:, 0], maps["perlin"][:, 0]


def _dfd_stats(net: Any) -> Stats:
    """``(μ, σ)`` of each branch that its weighted normaliser amounts to: ``w·(a·S − b) = (S − b/a)/(1/(w·a))``."""
    values = []
    for norm, weight in ((net.gaussian_norm, 1.0 - net.perlin_weight), (net.perlin_norm, net.perlin_weight)):
        scale, shift = float(norm.map_scale), float(norm.map_shift)
        values += [shift / scale, 1.0 / (max(weight, 1e-12) * scale)]
    return tuple(values)


def _dfd_scores(net: Any, maps: dict[str, torch.Tensor]) -> torch.Tensor:
    """DFD's image scores of the raw branch ``maps`` ``(N, H, W)`` with ``net``'s normalisers (its own ``fuse``)."""
    score, _ = net.fuse({name: maps[name].unsqueeze(1) for name in ("gaussian", "perlin")})
    return score


def _dfd_sources(model: Any, views: torch.Tensor, maps: dict[str, torch.Tensor]) -> dict[str, Source]:
    net = copy.deepcopy(model.model)
    net.prepare(views)  # the model's own normaliser rule, fitted on the views instead of the training pool
    gaussian, perlin = _batched_maps(DFD, model, views)
    return {"": Source(_mean_std(gaussian, perlin)), "-fit": Source(_dfd_stats(net), _dfd_scores(net, maps))}


def _dfd_check(model: Any, ckpt: Path) -> None:
    if model.model.gaussian is None or model.model.perlin is None:
        msg = f"{ckpt}: the fusion screen needs both DFD discriminators"
        raise InvalidArgumentError(msg)


DFD = FusionSpec(
    branches=("gaussian", "perlin"),
    short=("g", "p"),
    stored_name="pool",
    scores=_dfd_scores,
    maps=_dfd_maps,
    stored=lambda model: _dfd_stats(model.model),
    sources=_dfd_sources,
    cell=lambda model: float(model.hparams.image_size) / float(model.model.grid[0]),
    jitter=lambda model: 0.1,
    check=_dfd_check,
)

SPECS: dict[str, FusionSpec] = {"Pcsnet": PCSNET, "Dfd": DFD}


def development_maps(spec: FusionSpec, model: Any, root: str, category: str) -> dict[str, torch.Tensor]:
    """Both branch maps ``(N, H, W)`` of the development split, the model's own map, labels and masks."""
    if not (Path(root) / category / MANIFEST).is_file():
        msg = f"{root}/{category} is not a development split (no {MANIFEST}): this tool never reads a test split"
        raise InvalidArgumentError(msg)
    datamodule = evaluation_datamodule(model, root, category)
    transform = model.pre_processor.transform
    first, second = spec.branches
    out: dict[str, list[torch.Tensor]] = {first: [], second: [], "model": [], "label": [], "mask": []}
    with torch.no_grad():
        for batch in datamodule.test_dataloader():
            images, mask = transform(batch.image, batch.gt_mask)
            one, two = spec.maps(model, images)
            out[first].append(one)
            out[second].append(two)
            out["model"].append(model.model(images).anomaly_map[:, 0])
            out["label"].append(batch.gt_label.reshape(-1).int())
            out["mask"].append(mask.reshape(one.shape).bool())
    return {name: torch.cat(values) for name, values in out.items()}


def mixing_weight(stats: Stats, reference: Stats) -> float:
    """The weight ``a`` of the second branch that ``stats`` amount to, in ``reference``'s standardised units."""
    first_scale = reference[1] / stats[1]
    second_scale = reference[3] / stats[3]
    return second_scale / (first_scale + second_scale)


def mix(maps: dict[str, torch.Tensor], weight: float, reference: Stats, branches: tuple[str, str]) -> torch.Tensor:
    """``(1 − a)·z_1 + a·z_2`` with ``reference``'s statistics."""
    z_first = (maps[branches[0]] - reference[0]) / reference[1]
    z_second = (maps[branches[1]] - reference[2]) / reference[3]
    return (1.0 - weight) * z_first + weight * z_second


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
    ckpt: Path, shifts: list[float], views: int, weights: list[float], model_name: str = "Pcsnet"
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Source rows and sweep rows of one development checkpoint."""
    from anomalib_fewshot.models import REGISTRY

    spec = SPECS[model_name]
    model = REGISTRY[model_name].model_class.load_from_checkpoint(ckpt, weights_only=True).eval()
    spec.check(model, ckpt)
    record = model.few_shot_record or {}
    shots = model.read_shot_images(record["shots"])
    shot_dir = Path(record["shots"][0]).parents[2]  # <root>/<category>/train/good/<file>
    root, category = str(shot_dir.parent), shot_dir.name
    maps = development_maps(spec, model, root, category)
    stored = Source(spec.stored(model), spec.scores(model.model, maps) if spec.scores else None)
    sources: dict[str, Source] = {spec.stored_name: stored}
    with torch.no_grad():
        for shift in shifts:
            images = normal_views(shots, views, shift * spec.cell(model), spec.jitter(model), seed=0)
            for suffix, source in spec.sources(model, images, maps).items():
                sources[f"views-{shift:g}{suffix}"] = source
    reference = (sources[f"views-{shifts[0]:g}"] if shifts else stored).stats
    base = {"k_shot": record.get("k_shot"), "few_shot_seed": record.get("few_shot_seed"), "category": category}
    source_rows = []
    for name, source in sources.items():
        weight = mixing_weight(source.stats, reference)
        mixed = mix(maps, weight, reference, spec.branches)
        scores = source.scores if source.scores is not None else mixed.flatten(1).amax(1)
        metrics = compute_metrics(scores.numpy(), mixed.numpy(), maps["label"].numpy(), maps["mask"].numpy())
        # self-check: the stored statistics' mix is the model's own map up to scale and offset
        matches = model_correlation(mixed, maps["model"]) if name == spec.stored_name else None
        first, second = spec.short
        source_rows.append(
            {
                **base,
                "source": name,
                "weight": round(weight, 4),
                f"mu_{first}": source.stats[0],
                f"sigma_{first}": source.stats[1],
                f"mu_{second}": source.stats[2],
                f"sigma_{second}": source.stats[3],
                "model_correlation": matches,
                **{k: round(v, 4) for k, v in metrics.items()},
            }
        )
    sweep_rows = []
    for weight in weights:
        metrics = _image_pixel_auroc(mix(maps, weight, reference, spec.branches), maps["label"], maps["mask"])
        sweep_rows.append({**base, "weight": weight, **{k: round(v, 4) for k, v in metrics.items()}})
    return source_rows, sweep_rows


def _kind(source: str) -> str:
    """A source's marker group: the stored statistics, mean/std of the views, or the model's rule on the views."""
    if not source.startswith("views"):
        return source
    return "fit" if source.endswith("-fit") else "views"


def _plot(sweep: list[dict[str, Any]], sources: list[dict[str, Any]], path: Path, model_name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = SPECS[model_name]
    first, second = spec.branches
    keys = sorted({(r["category"], r["k_shot"]) for r in sweep}, key=str)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for metric, axis in zip(("image_auroc", "pixel_auroc"), axes, strict=True):
        for key in keys:
            rows = [r for r in sweep if (r["category"], r["k_shot"]) == key]
            weights = sorted({r["weight"] for r in rows})
            means = [np.mean([r[metric] for r in rows if r["weight"] == w]) for w in weights]
            (line,) = axis.plot(weights, means, label=f"{key[0]} k={key[1]}")
            for kind, marker in ((spec.stored_name, "x"), ("views", "o"), ("fit", "s")):
                picks = [r for r in sources if (r["category"], r["k_shot"]) == key and _kind(r["source"]) == kind]
                if picks:
                    axis.scatter([np.mean([r["weight"] for r in picks])], [np.mean([r[metric] for r in picks])],
                                 marker=marker, color=line.get_color())  # fmt: skip
        axis.set_xlabel(f"weight a of the {second} branch (0: {first} alone, 1: {second} alone)")
        axis.set_ylabel(f"{metric} (development, mean over seeds)")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    title = f"{model_name} fused map, development split (x: {spec.stored_name}, o: views, s: rule on views)"
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Screen every development checkpoint of the variant; write the CSVs and the plot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(SPECS), default="Pcsnet")
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
    for work in sorted(args.jobs.glob(f"{args.model}_{args.variant}_*_dev")):
        result = json.loads((work / "result.json").read_text()) if (work / "result.json").is_file() else {}
        k, seed = (int(v) for v in work.name.removesuffix("_dev").rsplit("_", 2)[-2:])
        if (args.k_shot and k not in args.k_shot) or (args.seeds and seed not in args.seeds):
            continue
        ckpt = checkpoint_of(work)
        if ckpt is None:
            continue
        rows, curve = screen_checkpoint(ckpt, args.shifts, args.views, args.weights, args.model)
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
        _plot(sweep, sources, args.output / "sweep.png", args.model)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
