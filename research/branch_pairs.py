"""Per-branch metrics of a development grid's fitted checkpoints, on the development split and on the test split.

    python -m research.branch_pairs -c configs/benchmark/dev.yaml
        --output docs/benchmarks/dev/branches [--only MODEL ...] [--splits dev]   (one line)
    python -m research.branch_pairs -c research/grids/train_seed_spread.yaml --dev-config configs/benchmark/dev.yaml
        --splits dev --output docs/benchmarks/dev/train_seed_spread_branches   (a test-split grid's fits, dev split)

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
import json
from collections.abc import Container, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anomalib_fewshot.benchmark.dev import ensure_dev_splits
from anomalib_fewshot.benchmark.grid import job_work_dir, jobs_dir_of, load_grid, select_jobs
from anomalib_fewshot.benchmark.store import job_key, read_rows, train_seed, write_rows
from anomalib_fewshot.data.dev_split import MANIFEST
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

    def fitted(
        self, specs: Mapping[str, Any], done: Container[str], action: str
    ) -> Iterator[tuple[dict[str, Any], Path, Path, Any]]:
        """``(job, work_dir, checkpoint, model)`` of every job whose folder name is not in ``done``.

        The model is its spec's (``specs[job["model"]].model_class``) loaded from the job's newest checkpoint, in eval
        mode; a job without a checkpoint is skipped with a line saying so (``action``: what re-running it allows).
        """
        for job in self.jobs:
            work_dir = self.work_dir(job)
            if work_dir.name in done:
                continue
            ckpt = checkpoint_of(work_dir)
            if ckpt is None:
                print(f"{work_dir.name}: no checkpoint in {work_dir} (re-run the job to {action})")
                continue
            model = specs[job["model"]].model_class.load_from_checkpoint(ckpt, weights_only=True).eval()
            yield job, work_dir, ckpt, model


def finished_dev_jobs(
    config_path: Path, only: list[str] | None, models: Container[str], what: str, dev_config: Path | None = None
) -> DevJobs:
    """The ``ok`` jobs of ``models`` (``--only`` applied) of a grid, with the development splits they are scored on.

    Without ``dev_config`` the grid must be a development grid (``evaluate_on: dev``; ``what`` names the tool's rows
    in the error) and its own splits are used. With it, any grid's jobs (a test-split grid's fits too) are scored on
    the splits ``dev_config`` defines (built if needed); a job whose shots are among a split's images is refused when
    its checkpoint is loaded (:func:`check_shots_outside`).
    """
    config, jobs = load_grid(config_path)
    if dev_config is None and config.get("evaluate_on") != "dev":
        msg = f"{config_path}: {what} come from a development grid (evaluate_on: dev), or pass --dev-config"
        raise InvalidArgumentError(msg)
    grid_output = Path(config.get("output", "benchmark_results"))
    ok = {job_key(row) for row in read_rows(grid_output / "results.csv") if row.get("status") == "ok"}
    todo = [job for job in select_jobs(jobs, only) if job["model"] in models and job_key(job) in ok]
    datasets = {d["name"]: d for d in config["grid"]["datasets"]}
    split_config = config if dev_config is None else load_grid(dev_config)[0]
    known = {d["name"] for d in split_config["grid"]["datasets"]}
    missing = sorted({job["dataset"] for job in todo} - known)
    if missing:
        msg = f"{dev_config}: no development split for dataset(s) {', '.join(missing)} (add them to its datasets)"
        raise InvalidArgumentError(msg)
    dev_roots = ensure_dev_splits(split_config, {job["dataset"] for job in todo})
    return DevJobs(config, grid_output, todo, jobs_dir_of(config, grid_output), datasets, dev_roots)


def check_shots_outside(model: Any, dev_root: Path, category: str) -> None:
    """Refuse a fitted ``model`` whose shots are among the development split's images (scored as unseen parts).

    A development grid's fits draw their shots from the split's own training folder; a test-split grid's fits draw
    them from the dataset's, and the split leaves out the shots of the few-shot seeds it was built for
    (``excluded_shots`` of its manifest). This checks the checkpoint's recorded shots against the split's sources.
    """
    manifest = json.loads((Path(dev_root) / category / MANIFEST).read_text())
    sources = {Path(item["source"]).resolve() for item in manifest["images"] if item.get("source")}
    shots = (getattr(model, "few_shot_record", None) or {}).get("shots") or []
    inside = [shot for shot in shots if Path(shot).resolve() in sources]
    if inside:
        msg = (
            f"{dev_root}: the fit's shot(s) {', '.join(map(str, inside))} are images of this development split; "
            "score it on a split built without them"
        )
        raise InvalidArgumentError(msg)


def branch_pairs(
    config_path: Path,
    output: Path,
    only: list[str] | None = None,
    splits: tuple[str, ...] = SPLITS,
    dev_config: Path | None = None,
) -> Path:
    """Score the branches of the grid's finished jobs on ``splits``; return ``branches.csv``.

    ``dev_config``: score any grid's fits (a test-split grid's too) on the development splits this grid defines
    (:func:`finished_dev_jobs`).
    """
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown or not splits:
        msg = f"--splits {' '.join(splits)}: choose from {', '.join(SPLITS)}"
        raise InvalidArgumentError(msg)
    found = finished_dev_jobs(config_path, only, BRANCHES, "branch pairs", dev_config)
    datasets, dev_roots = found.datasets, found.dev_roots
    csv_path = output / "branches.csv"
    rows = read_rows(csv_path)
    done = {(row["job"], row["split"]) for row in rows}
    finished = {name for name, _ in done if all((name, split) in done for split in splits)}
    for job, work_dir, ckpt, model in found.fitted(BRANCHES, finished, "score its branches"):
        name, spec = work_dir.name, BRANCHES[job["model"]]
        dataset = datasets[job["dataset"]]
        roots = {"dev": dev_roots[job["dataset"]], "test": Path(dataset["root"])}
        if dev_config is not None and "dev" in splits:
            check_shots_outside(model, roots["dev"], dataset["category"])
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
    parser.add_argument(
        "-c", "--config", type=Path, required=True, help="a development grid YAML (or any grid, with --dev-config)"
    )
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--only", nargs="+", default=None, metavar="MODEL[:VARIANT]")
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS, help="default: dev test")
    parser.add_argument(
        "--dev-config", type=Path, default=None, metavar="GRID",
        help="score the fits on the development splits this grid defines (e.g. configs/benchmark/dev.yaml)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    print(branch_pairs(args.config, args.output, args.only, tuple(args.splits), args.dev_config))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
