"""Re-score a development grid's fitted checkpoints with inference-only switches, without fitting again.

    python -m research.rescore -c configs/benchmark/dev.yaml --only Fdsl:fdsl_lite-pseudo
        --variant score_map_max:score_mode=map_max --output docs/benchmarks/dev/fdsl_score/results.csv  (one line)

For every finished (``ok``) development job selected by ``--only`` whose checkpoint is still in the grid's
``jobs_dir``, the checkpoint is loaded once per ``--variant NAME:ATTR=VALUE[:ATTR=VALUE...]``, each ``ATTR`` of the
model's torch module is set to its ``VALUE`` (read as YAML: ``true``, ``0.5``, ``map_max``), and the model is scored
on the job's development split exactly as the runner scores it (raw outputs, the same metrics and per-family
columns). Rows are written as the runner's rows with the variant ``<job variant>-<NAME>`` (and ``rescored_from``:
the job's folder), so :mod:`research.target` and the report read them beside the grid's rows; the
command resumes (rows already in ``--output`` are not re-scored).

Only switches that act at inference belong here (an image-score rule, a map combination, a fusion weight): a switch
that changes what the fit learns needs a grid variant that fits again. An attribute the torch module does not have
is an error; a dotted ``ATTR`` (``image_score.rule=max``) sets an attribute of a submodule. The development split only:
this tool never reads a test split.
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from anomalib_fewshot.benchmark.dev import ensure_dev_splits
from anomalib_fewshot.benchmark.grid import job_work_dir, jobs_dir_of, load_grid, select_jobs
from anomalib_fewshot.benchmark.machine import cpu_name
from anomalib_fewshot.benchmark.store import KEY_FIELDS, job_key, read_rows, write_rows
from anomalib_fewshot.errors import InvalidArgumentError
from anomalib_fewshot.models import REGISTRY
from research.branch_pairs import checkpoint_of


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """``NAME:ATTR=VALUE[:ATTR=VALUE...]`` -> ``(NAME, {ATTR: VALUE})`` (values read as YAML)."""
    name, *pairs = text.split(":")
    if not name or not pairs or any("=" not in pair for pair in pairs):
        msg = f"--variant {text!r}: expected NAME:ATTR=VALUE[:ATTR=VALUE...], e.g. score_max:score_mode=map_max"
        raise InvalidArgumentError(msg)
    return name, {key.strip(): yaml.safe_load(value) for key, value in (pair.split("=", 1) for pair in pairs)}


def apply_switches(model: Any, switches: dict[str, Any], where: str) -> None:
    """Set each switch on ``model.model`` (the torch module); unknown attributes are errors naming ``where``.

    A dotted ``ATTR`` reaches into a submodule (``image_score.rule``: the rule of the model's image score).
    """
    missing = object()
    for path, value in switches.items():
        *parents, attr = path.split(".")
        owner = model.model
        for name in parents:
            owner = getattr(owner, name, missing)
        if owner is missing or not hasattr(owner, attr):
            model_name = type(model.model).__name__
            msg = f"{where}: {model_name} has no attribute {path!r} (an inference-only switch of the model)"
            raise InvalidArgumentError(msg)
        setattr(owner, attr, value)


def score_checkpoint(model: Any, root: str | Path, category: str) -> dict[str, Any]:
    """The runner's metrics and per-family columns of a fitted ``model`` on a development split's test folder."""
    from anomalib_fewshot.benchmark.job import evaluation_datamodule, split_metrics

    metrics, n_test = split_metrics(model, evaluation_datamodule(model, root, category), per_family=True)
    return {**metrics, "n_test": n_test}


def rescore(config_path: Path, output: Path, only: list[str], variants: list[str]) -> Path:
    """Score every selected finished job's checkpoint under each variant; append the rows to ``output``."""
    parsed = [parse_variant(text) for text in variants]
    config, jobs = load_grid(config_path)
    if config.get("evaluate_on") != "dev":
        msg = f"{config_path}: rescoring reads a development grid (evaluate_on: dev)"
        raise InvalidArgumentError(msg)
    grid_output = Path(config.get("output", "benchmark_results"))
    results = {job_key(row): row for row in read_rows(grid_output / "results.csv") if row.get("status") == "ok"}
    rows = read_rows(output)
    done = {job_key(row) for row in rows}
    jobs_dir = jobs_dir_of(config, grid_output)
    datasets = {d["name"]: d for d in config["grid"]["datasets"]}
    todo = [job for job in select_jobs(jobs, only) if job_key(job) in results]
    dev_roots = ensure_dev_splits(config, {job["dataset"] for job in todo})
    for job in todo:
        base = results[job_key(job)]
        keys = {name: job_key({**base, "variant": f"{job_key(job)[1]}-{name}"}) for name, _ in parsed}
        if all(key in done for key in keys.values()):
            continue
        work_dir = job_work_dir(jobs_dir, job)
        ckpt = checkpoint_of(work_dir)
        if ckpt is None:
            print(f"{work_dir.name}: no checkpoint in {work_dir} (re-run the job to rescore it)")
            continue
        spec = REGISTRY[job["model"]]
        for name, switches in parsed:
            if keys[name] in done:
                continue
            model = spec.model_class.load_from_checkpoint(ckpt, weights_only=True).eval()
            apply_switches(model, switches, f"--variant {name}")
            metrics = score_checkpoint(model, dev_roots[job["dataset"]], datasets[job["dataset"]]["category"])
            row = {
                **dict(zip(KEY_FIELDS, keys[name], strict=True)),
                "profile": base.get("profile", ""),
                "dev_generator": base.get("dev_generator", ""),
                "status": "ok",
                **{k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()},
                "shots": base.get("shots", ""),
                "switches": yaml.safe_dump(switches, default_flow_style=True).strip(),
                "rescored_from": work_dir.name,
                "machine": cpu_name(),
                "finished_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
            }
            rows.append(row)
            done.add(keys[name])
            write_rows(output, rows)  # after every row: a kill loses at most one evaluation
            metrics_text = " / ".join(str(row[m]) for m in ("image_auroc", "pixel_auroc", "aupro"))
            print(f"{work_dir.name} / {name}: image AUROC / pixel AUROC / AUPRO {metrics_text}")
    return output


def main(argv: list[str] | None = None) -> int:
    """``python -m research.rescore -c GRID --only M[:V] --variant NAME:A=V --output CSV``."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-c", "--config", type=Path, required=True, help="a development grid YAML")
    parser.add_argument("--only", nargs="+", required=True, metavar="MODEL[:VARIANT]")
    parser.add_argument("--variant", nargs="+", required=True, metavar="NAME:ATTR=VALUE[:ATTR=VALUE]")
    parser.add_argument("--output", type=Path, required=True, help="results CSV (resumed from)")
    args = parser.parse_args(argv)
    print(rescore(args.config, args.output, args.only, args.variant))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
