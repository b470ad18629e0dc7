"""Which image score from the map? Candidate rules compared offline on a development grid's checkpoints.

    python -m research.score_rules -c research/grids/decision_dev.yaml
        --output docs/benchmarks/dev_decision/score_rules [--only MODEL ...]              (one line)

For every finished job of the grid whose checkpoint is still in its ``jobs_dir`` (our models; the baselines are not
ours to change), the checkpoint is loaded once and scores, without gradients and in the model's geometry:

- the evaluated development split (raw image scores and maps, as the runner reads them);
- the calibration sets the shipped threshold comes from (:func:`calibration_sets` of the stored shots: normal views
  and Perlin defects, the model's seed, ``strong`` views);
- the normal views the standardising rules fit their per-pixel statistics on (another seed, so that the threshold
  is never set on the views the statistics came from).

Each rule of :class:`~anomalib_fewshot.components.nn.scoring.ImageScore` (what ``image_score`` ships) turns the
model's score and map into an image score: ``model`` (the model's own), ``max``, ``top1`` (mean of the highest 1 %),
``resid`` (the map less the normal views' mean map) and ``z`` (standardised per pixel by the normal views); the last
two fit their statistics exactly as a fit does (:func:`fit_image_score`: other views than the calibration sets).

Per job and rule: image AUROC and oracle F1-max on the development split, and the decision at the ``f1`` rule's
threshold set on the calibration sets scored by the same rule (F1, FPR, TPR, ``gap = f1max - f1``). The maps are
not changed by any rule, so the pixel metrics are those of the job's row. Writes ``rules.csv`` (resumable: a job
with rows is not scored again) and ``summary.md``, which also names each model's rule by :func:`choose` (the rule
below, written on 2026-12-07 after the first partial rows had been seen); the model README's Deviations table records
a choice made on it.
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anomalib_fewshot.benchmark.job import evaluation_datamodule, image_auroc
from anomalib_fewshot.benchmark.store import read_rows, write_rows
from anomalib_fewshot.components.io.atomic import atomic_write_text
from anomalib_fewshot.components.lifecycle.calibration import calibration_sets, fit_image_score, score_in_chunks
from anomalib_fewshot.components.nn.scoring import IMAGE_SCORES, ImageScore
from anomalib_fewshot.models import REGISTRY
from research.branch_pairs import finished_dev_jobs
from research.decisions import decision, f1_threshold, f1max

#: The views the shipped threshold is calibrated on (the default strength).
STRENGTH = "strong"


def split_maps(model: Any, root: Path, category: str) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Raw scores, maps and labels of the test folder of ``root``, read as the runner reads it."""
    datamodule = evaluation_datamodule(model, root, category)
    transform = model.pre_processor.transform
    scores, maps, labels = [], [], []
    for batch in datamodule.test_dataloader():
        chunk_scores, chunk_maps = score_in_chunks(model.score_raw, transform(batch.image))
        scores.append(chunk_scores)
        maps.append(chunk_maps)
        labels.append(batch.gt_label.int())
    return torch.cat(scores), torch.cat(maps), torch.cat(labels).numpy()


def job_rows(model: Any, root: Path, category: str) -> list[dict[str, Any]]:
    """One row per rule of :data:`IMAGE_SCORES` for a loaded checkpoint on the development split of ``root``."""
    seed = int(model.hparams.few_shot_seed)
    images, extra = model.calibration_images()
    normal, defective, _ = calibration_sets(images, seed=seed, include_images=extra, strength=STRENGTH)
    calibration = {"normal": score_in_chunks(model.score_raw, normal)}
    calibration["defect"] = score_in_chunks(model.score_raw, defective)
    scores, maps, labels = split_maps(model, root, category)
    rows = []
    for name in IMAGE_SCORES:
        rule = ImageScore(name)
        fit_image_score(rule, model.score_raw, images, seed=seed, strength=STRENGTH)

        def rescored(outputs: tuple[torch.Tensor, torch.Tensor], rule: ImageScore = rule) -> np.ndarray:
            raw, raw_maps = outputs
            return rule(raw, raw_maps[:, None]).numpy()

        values = rescored((scores, maps))
        threshold = f1_threshold(rescored(calibration["normal"]), rescored(calibration["defect"]))
        auroc = image_auroc(values, labels)
        best = f1max(values, labels)
        result = decision(values, labels, threshold)
        rows.append(
            {
                "rule": name,
                "image_auroc": round(auroc, 4),
                "image_f1max": round(best, 4),
                "image_f1": round(result["f1"], 4),
                "gap": round(best - result["f1"], 4),
                "image_fpr": round(result["fpr"], 4),
                "image_tpr": round(result["tpr"], 4),
            }
        )
    return rows


def score_rules(config_path: Path, output: Path, only: list[str] | None = None) -> Path:
    """Score every rule on the grid's finished development jobs of our models; return ``rules.csv``."""
    found = finished_dev_jobs(config_path, only, REGISTRY, "score rules")
    csv_path = output / "rules.csv"
    rows = read_rows(csv_path)
    done = {row["job"] for row in rows}
    for job, work_dir, _, model in found.fitted(REGISTRY, done, "score its rules"):
        meta = {"job": work_dir.name, **{k: job[k] for k in ("model", "dataset", "k_shot", "seed")}}
        category = found.datasets[job["dataset"]]["category"]
        rows += [{**meta, **row} for row in job_rows(model, found.dev_roots[job["dataset"]], category)]
        write_rows(csv_path, rows)  # after every job: a kill loses at most one
        print(f"{work_dir.name}: scored")
    atomic_write_text(output / "summary.md", summarise(rows, found.grid_output / "results.csv"))
    return csv_path


#: A rule replaces the model's own score only when it is paired-better on this share of the model's jobs or more.
PAIRED_SHARE = 5 / 6


def choose(rows: list[dict[str, Any]], baseline: dict[tuple[str, str, str], float]) -> dict[str, str]:
    """Per model, the rule the lite profile ships: ``model`` unless another rule beats it on the same fits.

    Another rule qualifies when its image AUROC is higher than the model's own score's on at least
    :data:`PAIRED_SHARE` of the model's jobs (same checkpoint, same split: a paired comparison, so one dataset's large
    gain cannot outvote the others), its mean decision gap is not larger and it is at or above Patchcore on no fewer
    jobs; of the qualifying rules the one with the highest mean image AUROC is chosen.
    """
    by_job: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for row in rows:
        by_job[row["job"]][row["rule"]] = row
    chosen = {}
    for model in sorted({row["model"] for row in rows}):
        jobs = [rules for rules in by_job.values() if next(iter(rules.values()))["model"] == model and "model" in rules]
        candidates = []
        for rule in sorted({r for rules in jobs for r in rules} - {"model"}):
            paired = [rules for rules in jobs if rule in rules]
            if not paired:
                continue
            ours, own = [rules[rule] for rules in paired], [rules["model"] for rules in paired]
            wins = sum(float(a["image_auroc"]) > float(b["image_auroc"]) for a, b in zip(ours, own, strict=True))
            gap = statistics.mean(float(r["gap"]) for r in ours) <= statistics.mean(float(r["gap"]) for r in own)
            above = _at_or_above(ours, baseline) >= _at_or_above(own, baseline)
            if wins >= PAIRED_SHARE * len(paired) and gap and above:
                candidates.append((statistics.mean(float(r["image_auroc"]) for r in ours), rule))
        chosen[model] = max(candidates)[1] if candidates else "model"
    return chosen


def _at_or_above(group: list[dict[str, Any]], baseline: dict[tuple[str, str, str], float]) -> int:
    """How many of ``group``'s jobs have an image AUROC at or above Patchcore's on the same split and shots."""
    return sum(
        float(r["image_auroc"]) >= baseline[key]
        for r in group
        if (key := (r["dataset"], str(r["k_shot"]), str(r["seed"]))) in baseline
    )


def summarise(rows: list[dict[str, Any]], results_csv: Path) -> str:
    """Markdown: per model and rule the mean image AUROC, the cells at or above Patchcore, the mean decision gap."""
    baseline = {
        (r["dataset"], str(r["k_shot"]), str(r["seed"])): float(r["image_auroc"])
        for r in read_rows(results_csv)
        if r["model"] == "Patchcore" and r.get("status") == "ok"
    }
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["model"], row["rule"])].append(row)
    lines = [
        "# Image-score rules on the development splits",
        "",
        f"Rows: {len(rows)} ({len({r['job'] for r in rows})} jobs). Per model and rule, over its jobs (datasets x k): "
        "mean image AUROC, the jobs at or above Patchcore's image AUROC on the same split and shots, the mean gap "
        "between the oracle F1-max and the F1 at the threshold calibrated by the same rule (f1 rule, strong views), "
        "and the jobs within 0.05. Pixel metrics do not depend on the rule.",
        "",
        "| model | rule | jobs | mean image AUROC | at/above Patchcore | mean gap | within 0.05 | mean FPR "
        "| mean TPR |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (model, rule), group in sorted(groups.items()):
        compared = sum((r["dataset"], str(r["k_shot"]), str(r["seed"])) in baseline for r in group)
        gaps = [float(r["gap"]) for r in group]
        lines.append(
            f"| {model} | {rule} | {len(group)} | {statistics.mean(float(r['image_auroc']) for r in group):.3f} | "
            f"{_at_or_above(group, baseline)}/{compared} | {statistics.mean(gaps):.3f} | "
            f"{sum(g <= 0.05 for g in gaps)}/{len(gaps)} | "
            f"{statistics.mean(float(r['image_fpr']) for r in group):.2f} | "
            f"{statistics.mean(float(r['image_tpr']) for r in group):.2f} |"
        )
    chosen = choose(rows, baseline)
    lines += [
        "",
        f"**Chosen** (the model's own score unless another rule has a higher image AUROC on at least "
        f"{PAIRED_SHARE:.0%} of the model's jobs, same fits, without a larger mean gap or fewer jobs at or above "
        "Patchcore; of those, the highest mean image AUROC): "
        + ", ".join(f"{model} `{rule}`" for model, rule in chosen.items())
        + ".",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m research.score_rules -c GRID --output DIR [--only MODEL ...]``."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-c", "--config", type=Path, required=True, help="a development grid YAML")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--only", nargs="+", default=None, metavar="MODEL[:VARIANT]")
    args = parser.parse_args(argv)
    print(score_rules(args.config, args.output, args.only))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
