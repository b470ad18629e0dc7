"""Per-branch metrics of a development grid's fitted checkpoints, on the development split and on the test split.

    python -m research.branch_pairs -c configs/benchmark/dev.yaml
        --output docs/benchmarks/dev/branches [--only MODEL ...] [--splits dev]   (one line)

For every finished (``ok``) development job of the grid whose model has a branch hook (``ModelSpec.branch_maps``)
and whose checkpoint is still in the grid's ``jobs_dir``, the checkpoint is loaded once and
:func:`~research.branches.branch_rows` scores each branch on its own (image AUROC, pixel AUROC,
AUPRO, F1-max) on the dataset's development split and on its test split. Rows go to ``<output>/branches.csv`` (one
row per job, branch and split); a job with rows for every requested split is not re-scored, so the command
resumes. ``--splits dev`` scores the development split only (a per-branch diagnosis that reads no test image).

Why the test split is read here: each branch alone is an *ablation* of its model (DFD without its Gaussian
discriminator is its Perlin branch, PCSNet without CAS its prototype distances, ED's ``rec`` map, FDSL's raw
residual). :mod:`research.correlate` (``--branches``) pairs their development and test values to
measure whether the development split ranks such variants as the test split does. These test numbers are a
measurement of that correlation; no default, epoch or threshold is chosen from them.
"""

from __future__ import annotations

import argparse
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anomalib_fewshot.benchmark.dev import ensure_dev_splits
from anomalib_fewshot.benchmark.grid import job_work_dir, jobs_dir_of, load_grid, select_jobs
from anomalib_fewshot.benchmark.store import job_key, read_rows, train_seed, write_rows
from anomalib_fewshot.errors import InvalidArgumentError
from research.branches import BRANCHES, branch_rows

SPLITS = ("dev", "test")


def checkpoint_of(work_dir: Path) -> Path | None:
    """The newest ``*.ckpt`` under a job's work folder, or ``None``."""
    found = sorted(work_dir.rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


@dataclass(frozen=True)
class DevJobs:
    """A development grid's finished jobs of some models, where their checkpoints and development splits are."""

    config: dict[str, Any]
    grid_output: Path
    jobs: list[dict[str, Any]]
    jobs_dir: Path
    datasets: dict[str, dict[str, Any]]
    dev_roots: dict[str, Path]

    def work_dir(self, job: dict[str, Any]) -> Path:
        """The job's folder (its name labels the job's rows)."""
        return job_work_dir(self.jobs_dir, job)


def finished_dev_jobs(config_path: Path, only: list[str] | None, models: Container[str], what: str) -> DevJobs:
    """The ``ok`` jobs of ``models`` (``--only`` applied) of a development grid, its splits built if needed.

    ``what`` names the tool's rows in the error for a grid that is not a development grid.
    """
    config, jobs = load_grid(config_path)
    if config.get("evaluate_on") != "dev":
        msg = f"{config_path}: {what} come from a development grid (evaluate_on: dev)"
        raise InvalidArgumentError(msg)
    grid_output = Path(config.get("output", "benchmark_results"))
    ok = {job_key(row) for row in read_rows(grid_output / "results.csv") if row.get("status") == "ok"}
    todo = [job for job in select_jobs(jobs, only) if job["model"] in models and job_key(job) in ok]
    datasets = {d["name"]: d for d in config["grid"]["datasets"]}
    dev_roots = ensure_dev_splits(config, {job["dataset"] for job in todo})
    return DevJobs(config, grid_output, todo, jobs_dir_of(config, grid_output), datasets, dev_roots)


def branch_pairs(
    config_path: Path, output: Path, only: list[str] | None = None, splits: tuple[str, ...] = SPLITS
) -> Path:
    """Score the branches of the grid's finished development jobs on ``splits``; return ``branches.csv``."""
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown or not splits:
        msg = f"--splits {' '.join(splits)}: choose from {', '.join(SPLITS)}"
        raise InvalidArgumentError(msg)
    found = finished_dev_jobs(config_path, only, BRANCHES, "branch pairs")
    datasets, dev_roots = found.datasets, found.dev_roots
    csv_path = output / "branches.csv"
    rows = read_rows(csv_path)
    done = {(row["job"], row["split"]) for row in rows}
    for job in found.jobs:
        work_dir = found.work_dir(job)
        name = work_dir.name
        if all((name, split) in done for split in splits):
            continue
        ckpt = checkpoint_of(work_dir)
        if ckpt is None:
            print(f"{name}: no checkpoint in {work_dir} (re-run the job to score its branches)")
            continue
        spec = BRANCHES[job["model"]]
        model = spec.model_class.load_from_checkpoint(ckpt, weights_only=True).eval()
        dataset = datasets[job["dataset"]]
        roots = {"dev": dev_roots[job["dataset"]], "test": Path(dataset["root"])}
        for split in splits:
            if (name, split) in done:
                continue
            new, _ = branch_rows(spec, model, roots[split], dataset["category"], str(ckpt), job["dataset"])
            meta: dict[str, Any] = {"job": name, "variant": job_key(job)[1], "seed": job["seed"]}
            meta["train_seed"] = train_seed(job)  # research.seed_spread groups a branch's rows over it
            rows += [{**meta, **row} for row in new]
            write_rows(csv_path, rows)  # after every split: a kill loses at most one evaluation
            print(f"{name} / {split}: {len(new)} branches")
    return csv_path


def main(argv: list[str] | None = None) -> int:
    """``python -m research.branch_pairs -c GRID --output DIR [--only MODEL ...]``."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-c", "--config", type=Path, required=True, help="a development grid YAML")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--only", nargs="+", default=None, metavar="MODEL[:VARIANT]")
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS, help="default: dev test")
    args = parser.parse_args(argv)
    print(branch_pairs(args.config, args.output, args.only, tuple(args.splits)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
