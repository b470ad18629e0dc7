"""How much of a refit's OK/NG-threshold spread is the calibration draw? Fitted checkpoints re-calibrated offline.

    python -m research.recalibration -c research/grids/train_seed_spread.yaml --dev-config configs/benchmark/dev.yaml
        --output docs/benchmarks/dev/recalibration [--only MODEL ...] [--calibration-seeds 0 1 2 3 4] [--views 32]

The training-seed spread (issue 50) found every model's shipped threshold moving with the training seed alone. Two
things move with it: the fit (its raw scores) and the calibration draw (the normal views and Perlin defects the
threshold is fitted on are drawn with the training seed, :mod:`anomalib_fewshot.components.lifecycle.calibration`).
For every finished job of the grid whose checkpoint is still in its ``jobs_dir``, this scores the job's dataset's
**development split** once (raw image scores; the split ``--dev-config`` defines, refusing a fit whose shots are
among its images), then draws the calibration sets again with every calibration seed at every view count, exactly as
a fit does (the model's own calibration images, rule and view strength), and applies each image threshold to the
development scores as a deployment would (``score > threshold``): FPR, TPR, F1.

Writes ``recalibration.csv`` (one row per job, calibration seed and view count; ``shipped`` marks the draw the fit
itself made, whose threshold must equal the checkpoint's: ``shipped_threshold``) and ``summary.md``: per model,
dataset and view count, the FPR's standard deviation

- over calibration seeds with the fit fixed (``draw``, mean over fits): the calibration draw alone;
- over fits with the calibration seed fixed (``refit``, mean over seeds): the fit alone;
- over fits at their own calibration seed (``shipped``): what refitting gives a user.

Development split only; a diagnosis: it changes no default.
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from anomalib_fewshot.benchmark.store import KEY_FIELDS, job_key, read_rows, train_seed, write_rows
from anomalib_fewshot.components.io.atomic import atomic_write_text
from anomalib_fewshot.models import REGISTRY
from research.branch_pairs import check_shots_outside, finished_dev_jobs
from research.decisions import decision

#: The fields of a group in the summary (a group's rows differ in fit and calibration seed).
GROUP = ("model", "variant", "dataset", "k_shot", "seed", "views")


def thresholds(model: Any, seeds: list[int], views: list[int]) -> dict[tuple[int, int], float]:
    """The image threshold of each ``(calibration seed, views)`` draw, as the fit's own calibration sets it."""
    from anomalib_fewshot.components.lifecycle.calibration import (
        DEFAULT_RULE,
        DEFAULT_STRENGTH,
        DEFAULT_TARGET_FPR,
        fit_calibration,
        score_calibration_sets,
    )

    hp = model.hparams
    rule, strength = hp.get("calibration_rule", DEFAULT_RULE), hp.get("calibration_views", DEFAULT_STRENGTH)
    target_fpr = hp.get("calibration_fpr", DEFAULT_TARGET_FPR)
    images, extra = model.calibration_images()
    found = {}
    for count in views:
        for seed in seeds:
            scored = score_calibration_sets(
                model.score_raw, images, views=count, seed=seed, include_images=extra, strength=strength
            )
            found[(seed, count)] = fit_calibration(scored, rule, target_fpr).image_threshold
    return found


def recalibrate(
    config_path: Path,
    dev_config: Path,
    output: Path,
    only: list[str] | None = None,
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4),
    views: tuple[int, ...] = (32,),
) -> Path:
    """Re-calibrate every selected finished job's checkpoint; write ``recalibration.csv`` and ``summary.md``."""
    from anomalib_fewshot.benchmark.job import evaluation_datamodule, scored_outputs
    from anomalib_fewshot.components.lifecycle.calibration import DEFAULT_VIEWS

    found = finished_dev_jobs(config_path, only, REGISTRY, "re-calibrations", dev_config)
    csv_path = output / "recalibration.csv"
    rows = read_rows(csv_path)
    done = {row["job"] for row in rows}
    for job, work_dir, _, model in found.fitted(REGISTRY, done, "re-calibrate it"):
        category, dev = found.datasets[job["dataset"]]["category"], found.dev_roots[job["dataset"]]
        check_shots_outside(model, dev, category)
        (scores, _, labels, _), _ = scored_outputs(model, evaluation_datamodule(model, dev, category), pixel=False)
        own = int(train_seed(job))
        shipped = float(model.post_processor._image_threshold)  # the raw-domain buffer apply_calibration fills
        key = {k: v for k, v in zip(KEY_FIELDS, job_key(job), strict=True) if k in GROUP}
        for (seed, count), threshold in thresholds(model, list(seeds), list(views)).items():
            is_shipped = seed == own and count == DEFAULT_VIEWS
            rows.append({
                "job": work_dir.name, **key, "train_seed": own, "calibration_seed": seed, "views": count,
                "image_threshold": round(threshold, 6), "shipped": is_shipped,
                "shipped_threshold": round(shipped, 6) if is_shipped else "",
                **{k: round(v, 4) for k, v in decision(scores, labels, threshold).items()}, "n_dev": len(labels),
            })  # fmt: skip
        write_rows(csv_path, rows)  # after every fit: a kill loses at most one
        print(f"{work_dir.name}: {len(seeds) * len(views)} calibrations on {len(labels)} development images")
    atomic_write_text(output / "summary.md", summary(rows, csv_path))
    return csv_path


def summary(rows: list[dict[str, Any]], source: Path) -> str:
    """The FPR spread per group: the calibration draw, the refit, and both as a refit ships them."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[tuple(str(row[f]) for f in GROUP)].append(row)
    lines = [
        f"Image-threshold spread on the development split, from `{source}`: standard deviation of the share of good "
        "images rejected (FPR) over calibration seeds with the fit fixed (draw), over fits with the calibration seed "
        "fixed (refit), and over fits at their own seed (shipped); mean FPR / TPR over every row.",
        "",
        "| model | variant | dataset | k | shots seed | views | fits | calibration seeds | FPR std: draw | refit | "
        "shipped | mean FPR | mean TPR |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, group in sorted(groups.items()):
        by_fit: dict[str, dict[str, float]] = defaultdict(dict)
        for row in group:
            by_fit[str(row["train_seed"])][str(row["calibration_seed"])] = float(row["fpr"])
        calib_seeds = sorted({s for fit in by_fit.values() for s in fit}, key=int)
        draw = _mean_std(list(by_fit.values()))
        refit = _mean_std([{f: by_fit[f][s] for f in by_fit if s in by_fit[f]} for s in calib_seeds])
        own = [fit[seed] for seed, fit in by_fit.items() if seed in fit]
        shipped = f"{statistics.stdev(own):.3f}" if len(own) > 1 else "–"
        mean_fpr = statistics.mean(float(r["fpr"]) for r in group)
        mean_tpr = statistics.mean(float(r["tpr"]) for r in group)
        lines.append(
            f"| {' | '.join(key)} | {len(by_fit)} | {', '.join(calib_seeds)} | {draw} | {refit} | {shipped} | "
            f"{mean_fpr:.3f} | {mean_tpr:.3f} |"
        )
    return "\n".join(lines) + "\n"


def _mean_std(samples: list[dict[str, float]]) -> str:
    """Mean over ``samples`` of each one's standard deviation (samples with fewer than two values skipped)."""
    stds = [statistics.stdev(s.values()) for s in samples if len(s) > 1]
    return f"{statistics.mean(stds):.3f}" if stds else "–"


def main(argv: list[str] | None = None) -> int:
    """``python -m research.recalibration -c GRID --dev-config GRID --output DIR``."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-c", "--config", type=Path, required=True, help="the grid whose fits are re-calibrated")
    parser.add_argument("--dev-config", type=Path, required=True, help="the grid defining the development splits")
    parser.add_argument("--output", type=Path, required=True, help="folder of recalibration.csv (resumed from)")
    parser.add_argument("--only", nargs="+", default=None, metavar="MODEL[:VARIANT]")
    parser.add_argument("--calibration-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], metavar="SEED")
    parser.add_argument("--views", type=int, nargs="+", default=[32], metavar="N", help="normal views per draw")
    args = parser.parse_args(argv)
    path = recalibrate(
        args.config, args.dev_config, args.output, args.only, tuple(args.calibration_seeds), tuple(args.views)
    )
    print((path.parent / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
