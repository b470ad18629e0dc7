"""Benchmark runner: grid of models × datasets × k × seeds → results.csv → results.md and plots.

Each job runs in its own Python process under a time limit (a hung or crashing job is recorded, not fatal),
every finished job is written to ``results.csv`` atomically, and a re-run skips jobs already in the CSV, so an
interrupted grid resumes where it stopped.

    anomalib-fewshot benchmark -c configs/benchmark/real.yaml

Grid YAML::

    output: docs/benchmarks/real            # results.csv, results.md and *.png go here
    jobs_dir: benchmark_results/real_jobs   # per-job logs, checkpoints, exports (default: <output>/jobs)
    timeout_s: 3600                         # per job (a model entry may set its own timeout_s)
    grid:
      models:                               # plugin models take a shipped profile (+ overrides);
        - {model: Pcsnet, profile: pcsnet_lite}
        - {model: Patchcore}                # anomalib baselines on the same lite backbone and weights
        - {model: Padim, timeout_s: 900, threads: 1}   # threads: torch threads of that model's jobs
      datasets:                             # MVTec-layout roots; datamodule: Visa for anomalib's VisA layout
        - {name: mvtec_bottle, root: ../shared/data/mvtec_ad, category: bottle}
      k_shot: [1, 2, 4, full]               # full = every normal training image
      seeds: [0, 1, 2]
      skip:                                 # optional: jobs left out on purpose, with the reason (reported)
        - {model: Dfd, k_shot: full, reason: "..."}   # a list matches any of its values: seed: [1, 2]
      expected_failures:                    # optional: jobs known to fail; each still runs once and its failure
        - {model: Padim, k_shot: 1, reason: "..."}    # is recorded, then it counts as finished (not retried)
    heads:                                  # FDSL heads trained (once, before the grid) on a dataset's test split
      - {dataset: magnetic_tile, profile: fdsl_lite, epochs: 5, augment: mosaic}
    # ... and used by a model entry: {model: Fdsl, profile: fdsl_lite, head: magnetic_tile}. A job never
    # evaluates a head on the dataset whose annotated test split trained it (such jobs are skipped, reported).

Rows of another grid's ``results.csv`` with the same job (model, variant, dataset, k, seed and profile) are
imported with ``--merge OTHER.csv``; ``--report-only`` rewrites ``results.md`` and the plots without running jobs.

Python API: ``run_grid(Path("configs/benchmark/real.yaml"))``.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from anomalib_fewshot.benchmark.machine import machine_description
from anomalib_fewshot.components.io import atomic_write_text
from anomalib_fewshot.errors import InvalidArgumentError, MissingFileError

METRICS = ("image_auroc", "pixel_auroc", "aupro", "image_f1max", "pixel_f1max")
TIMINGS = ("fit_s", "torch_ms", "openvino_ms", "peak_rss_mb")
KEY_FIELDS = ("model", "variant", "dataset", "k_shot", "seed")
FULL = "full"


def load_grid(config_path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Read a benchmark YAML and expand it into job specs."""
    import yaml

    if not config_path.is_file():
        msg = f"benchmark config '{config_path}' not found (see configs/benchmark/ for examples)"
        raise MissingFileError(msg)
    try:
        config = yaml.safe_load(config_path.read_text())
        grid = config["grid"]
    except (yaml.YAMLError, TypeError, KeyError) as exc:
        msg = f"{config_path}: not a benchmark config (YAML with a 'grid:' section): {exc}"
        raise InvalidArgumentError(msg) from exc
    jobs = []
    for model, dataset, k_shot, seed in itertools.product(
        grid["models"], grid["datasets"], grid["k_shot"], grid["seeds"]
    ):
        if str(k_shot) != FULL and (not isinstance(k_shot, int) or k_shot < 1):
            msg = f"{config_path}: k_shot values must be positive integers or '{FULL}', got {k_shot!r}"
            raise InvalidArgumentError(msg)
        overrides = model.get("overrides", {})
        variant = model.get("variant") or model.get("profile", "") + (
            "+" + json.dumps(overrides, sort_keys=True, separators=(",", ":")) if overrides else ""
        )
        jobs.append(
            {
                "head": model.get("head"),
                "model": model["model"],
                "variant": variant,
                "profile": model.get("profile", ""),
                "overrides": overrides,
                "dataset": dataset["name"],
                "root": str(Path(dataset["root"]).resolve()),
                "category": dataset["category"],
                "datamodule": dataset.get("datamodule", "MVTecAD"),
                "k_shot": str(k_shot) if str(k_shot) == FULL else k_shot,
                "seed": seed,
                "timeout_s": model.get("timeout_s", config.get("timeout_s", 3600)),
                "threads": model.get("threads"),
            }
        )
    return config, jobs


def skipped_jobs(config: dict[str, Any], jobs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
    """Jobs matched by the grid's ``skip`` rules (every given field equal, or in a given list), with the reason.

    Jobs whose FDSL head was trained on the job's own dataset are always skipped.
    """
    out = []
    for job in jobs:
        if job.get("head") is not None and job["head"] == job["dataset"]:
            out.append((job, "the head was trained on this dataset's annotated test split"))
            continue
        reason = _first_matching_rule(job, config["grid"].get("skip"), "left out")
        if reason is not None:
            out.append((job, reason))
    return out


def expected_failures(config: dict[str, Any], jobs: list[dict[str, Any]]) -> dict[tuple[str, ...], str]:
    """Reasons by job key for the jobs matched by the grid's ``expected_failures`` rules (same form as ``skip``).

    Such a job still runs until it has a row; a recorded failure then counts as finished and is not retried.
    """
    out = {}
    for job in jobs:
        reason = _first_matching_rule(job, config["grid"].get("expected_failures"), "expected to fail")
        if reason is not None:
            out[job_key(job)] = reason
    return out


def _first_matching_rule(job: dict[str, Any], rules: list[dict[str, Any]] | None, default: str) -> str | None:
    """The reason of the first rule whose every field equals the job's (or lists it); None when none matches."""
    for rule in rules or []:
        fields = {k: v for k, v in rule.items() if k != "reason"}
        if all(str(job.get(k)) in {str(x) for x in (v if isinstance(v, list) else [v])} for k, v in fields.items()):
            return str(rule.get("reason", default))
    return None


def finished_keys(
    rows: list[dict[str, str]], jobs: list[dict[str, Any]], expected: dict[tuple[str, ...], str]
) -> tuple[set[tuple[str, ...]], set[tuple[str, ...]]]:
    """Keys of ``jobs`` finished ok, and of those that failed as expected (both are not run again)."""
    status = {job_key(r): r.get("status") for r in rows}
    keys = {job_key(job) for job in jobs}
    ok = {key for key in keys if status.get(key) == "ok"}
    failed = {key for key in keys & set(expected) if status.get(key) not in (None, "ok")}
    return ok, failed


def merge_rows(csv_path: Path, sources: list[Path], jobs: list[dict[str, Any]]) -> int:
    """Import rows of other ``results.csv`` files that belong to ``jobs``; return how many were imported.

    A row belongs to a job when its key and profile are the job's. It is imported when this CSV has no row for
    the job, or has a failed one and the source's row is ok; rows already here are never replaced otherwise.
    """
    profiles = {job_key(job): str(job.get("profile", "")) for job in jobs}
    current = {job_key(r): r.get("status") for r in read_rows(csv_path)}
    imported: dict[tuple[str, ...], dict[str, str]] = {}
    for source in sources:
        if not Path(source).is_file():
            msg = f"--merge: results file '{source}' not found"
            raise MissingFileError(msg)
        try:
            rows = read_rows(Path(source))
            keyed = [(job_key(row), row) for row in rows]
        except (KeyError, csv.Error) as exc:
            msg = f"--merge: '{source}' is not a benchmark results.csv ({type(exc).__name__}: {exc})"
            raise InvalidArgumentError(msg) from exc
        for key, row in keyed:
            if profiles.get(key) != row.get("profile", ""):
                continue
            here = current.get(key)
            if here is None or (here != "ok" and row.get("status") == "ok"):
                imported[key] = row
                current[key] = row.get("status")
    if imported:
        upsert_rows(csv_path, list(imported.values()))  # one rewrite, not one per row
    return len(imported)


def job_key(job: dict[str, Any]) -> tuple[str, ...]:
    """Identity of a job in results.csv (rows written before variants existed use their profile)."""
    values = {**job, "variant": job.get("variant") or job.get("profile", "")}
    return tuple(str(values[f]) for f in KEY_FIELDS)


def read_rows(csv_path: Path) -> list[dict[str, str]]:
    """Rows of results.csv (empty when missing)."""
    if not csv_path.is_file():
        return []
    with csv_path.open(newline="") as stream:
        return list(csv.DictReader(stream))


def upsert_row(csv_path: Path, row: dict[str, Any]) -> None:
    """Add ``row`` (replacing an earlier row of the same job) by rewriting the CSV atomically."""
    upsert_rows(csv_path, [row])


def upsert_rows(csv_path: Path, new_rows: list[dict[str, Any]]) -> None:
    """Add ``new_rows`` (each replacing an earlier row of the same job) in one atomic rewrite of the CSV."""
    replaced = {job_key(row) for row in new_rows}
    kept = [r for r in read_rows(csv_path) if job_key(r) not in replaced]
    rows = [*kept, *({k: ("" if v is None else v) for k, v in row.items()} for row in new_rows)]
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, restval="")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(csv_path, buffer.getvalue())


def head_specs(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The grid's ``heads`` by dataset name, with that dataset's root and category; unknown names are errors."""
    datasets = {d["name"]: d for d in config["grid"]["datasets"]}
    specs = {}
    for head in config.get("heads", []) or []:
        name = head.get("dataset")
        if name not in datasets:
            msg = f"heads: dataset {name!r} is not one of the grid's datasets {sorted(datasets)}"
            raise InvalidArgumentError(msg)
        specs[name] = {**datasets[name], **head}
    for model in config["grid"]["models"]:
        if model.get("head") is not None and model["head"] not in specs:
            msg = f"model {model['model']} uses head {model['head']!r}, which is not listed under heads"
            raise InvalidArgumentError(msg)
    return specs


def head_path(jobs_dir: Path, spec: dict[str, Any]) -> Path:
    """Where the head trained on ``spec``'s dataset with its profile is kept."""
    return jobs_dir / "heads" / f"{spec['profile']}_{spec['dataset']}.pt"


def ensure_head(spec: dict[str, Any], jobs_dir: Path, timeout_s: float) -> tuple[Path | None, str]:
    """Train the head of ``spec`` unless its file exists; return (path or None, error)."""
    from anomalib_fewshot.config import model_config_path

    path = head_path(jobs_dir, spec)
    if path.is_file():
        return path, ""
    path.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "anomalib_fewshot.cli", "fdsl-pretrain",
        "--config", str(model_config_path(spec["profile"])),
        "--data", spec.get("datamodule", "MVTecAD"),
        "--data-root", str(Path(spec["root"]).resolve()),
        "--categories", str(spec["category"]),
        "--output", str(path),
        "--epochs", str(spec.get("epochs", 5)),
        "--batch-size", str(spec.get("batch_size", 8)),
        "--reference-k", str(spec.get("reference_k", 10)),
        "--augment", str(spec.get("augment", "mosaic")),
        "--seed", str(spec.get("seed", 111)),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    log_path = path.with_suffix(".log")
    with log_path.open("w") as log:
        try:
            proc = subprocess.run(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired:
            return None, f"head training timed out after {timeout_s:.0f} s (log: {log_path})"
    if proc.returncode != 0 or not path.is_file():
        tail = log_path.read_text(errors="replace").strip().splitlines()[-1:]
        return None, f"head training failed: {tail[0][:300] if tail else ''} (log: {log_path})"
    return path, ""


def run_job(job: dict[str, Any], jobs_dir: Path, timeout_s: float) -> dict[str, Any]:
    """Run one job in a subprocess (work folder under ``jobs_dir``); return its row (status ok/failed/timeout)."""
    name = "".join(c if c.isalnum() or c in "._-" else "_" for c in "_".join(job_key(job)))
    work = jobs_dir / name
    work.mkdir(parents=True, exist_ok=True)
    result_path = work / "result.json"
    result_path.unlink(missing_ok=True)
    spec = {**job, "work_dir": str(work), "k_shot": None if job["k_shot"] == FULL else job["k_shot"]}
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    start = time.perf_counter()
    row = {**{f: job[f] for f in KEY_FIELDS}, "profile": job["profile"]}
    log_path = work / "log.txt"
    with log_path.open("w") as log:
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "anomalib_fewshot.benchmark.job", json.dumps(spec), str(result_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                timeout=timeout_s,
                check=False,
            )
            status = "ok" if proc.returncode == 0 and result_path.is_file() else "failed"
        except subprocess.TimeoutExpired:
            status = "timeout"
    row["status"] = status
    row["wall_s"] = round(time.perf_counter() - start, 1)
    if status == "ok":
        row.update(json.loads(result_path.read_text()))
    else:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] if log_path.is_file() else []
        row["error"] = f"{status}: {tail[0][:300] if tail else ''}"
    return row


def summarise(
    rows: list[dict[str, str]],
    jobs: list[dict[str, Any]] | None = None,
    expected: dict[tuple[str, ...], str] | None = None,
) -> str:
    """Markdown table: mean ± std over seeds per model × variant × dataset × k (only the grid's ``jobs``).

    Failed jobs are listed below the table, those in ``expected`` (key → reason) marked as expected failures.
    """
    if jobs is not None:
        wanted = {job_key(job) for job in jobs}
        rows = [r for r in rows if job_key(r) in wanted]
    groups: dict[tuple[str, ...], list[dict[str, str]]] = {}
    for row in rows:
        if row.get("status") == "ok":
            key = job_key(row)
            groups.setdefault((key[0], key[1], key[2], key[3]), []).append(row)
    header = ["model", "variant", "dataset", "k", "seeds", *METRICS, *TIMINGS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key in sorted(groups, key=_sort_key):
        group = groups[key]
        cells = [*key, str(len(group))]
        for field in (*METRICS, *TIMINGS):
            values = [float(r[field]) for r in group if r.get(field)]
            if not values:
                cells.append("–")
                continue
            mean = statistics.mean(values)
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{mean:.3f} ± {std:.3f}" if field in METRICS else f"{mean:.1f} ± {std:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    failed = [r for r in rows if r.get("status") != "ok"]
    if failed:
        expected = expected or {}
        lines += ["", "Failed jobs:"]
        for r in failed:
            note = f" (expected: {expected[job_key(r)]})" if job_key(r) in expected else ""
            lines.append(f"- {'/'.join(job_key(r))}{note}: {r.get('error', '')}")
    return "\n".join(lines) + "\n"


def _sort_key(key: tuple[str, ...]) -> tuple[Any, ...]:
    """Model, variant, dataset, then k numerically (``full`` last)."""
    k = key[3]
    return (*key[:3], int(k) if k.isdigit() else float("inf"))


def run_grid(config_path: Path, output: Path | None = None, merge: list[Path] | None = None, run: bool = True) -> Path:
    """Run (or resume) the grid of ``config_path``; return the results folder.

    Args:
        config_path: The grid YAML.
        output: Results folder (default: the YAML's ``output``).
        merge: Other ``results.csv`` files whose rows of this grid's jobs are imported first (see ``merge_rows``).
        run: False writes the report (and merges) without running any job.

    """
    config, jobs = load_grid(config_path)
    output = Path(output or config.get("output", "benchmark_results"))
    output.mkdir(parents=True, exist_ok=True)
    csv_path = output / "results.csv"
    jobs_dir = Path(config.get("jobs_dir") or output / "jobs")
    skipped = skipped_jobs(config, jobs)
    skipped_keys = {job_key(job) for job, _ in skipped}
    jobs = [job for job in jobs if job_key(job) not in skipped_keys]
    expected = expected_failures(config, jobs)
    if merge:
        print(f"merged {merge_rows(csv_path, list(merge), jobs)} row(s) from {', '.join(map(str, merge))}")
    if not run:
        write_report(config_path, output, jobs, skipped, expected)
        return output
    ok, failed_as_expected = finished_keys(read_rows(csv_path), jobs, expected)
    todo = [job for job in jobs if job_key(job) not in ok | failed_as_expected]
    heads = head_specs(config)
    head_files: dict[str, tuple[Path | None, str]] = {}
    for name in sorted({job["head"] for job in todo if job.get("head")}):
        head_files[name] = ensure_head(heads[name], jobs_dir, float(config.get("timeout_s", 3600)))
    from rich.progress import Progress

    with Progress() as progress:
        task = progress.add_task("benchmark jobs", total=len(jobs), completed=len(jobs) - len(todo))
        for job in todo:
            progress.update(task, description="/".join(job_key(job)))
            if job.get("head"):
                path, error = head_files[job["head"]]
                if path is None:
                    row = {**{f: job[f] for f in KEY_FIELDS}, "profile": job["profile"], "status": "failed"}
                    upsert_row(csv_path, {**row, "error": error})
                    progress.advance(task)
                    continue
                job = {**job, "overrides": {**job["overrides"], "head_weights": str(path)}}
            upsert_row(csv_path, run_job(job, jobs_dir, float(job["timeout_s"])))
            write_report(config_path, output, jobs, skipped, expected)  # the report follows the grid as it grows
            progress.advance(task)
    write_report(config_path, output, jobs, skipped, expected)
    return output


def write_report(
    config_path: Path,
    output: Path,
    jobs: list[dict[str, Any]],
    skipped: list[tuple[dict[str, Any], str]],
    expected: dict[tuple[str, ...], str] | None = None,
) -> Path:
    """Write ``results.md`` (and the plots) from ``results.csv``: progress, tables, left-out jobs.

    ``expected`` (job key → reason) marks expected failures, which count as finished once recorded.
    """
    rows = read_rows(output / "results.csv")
    ok, failed_as_expected = finished_keys(rows, jobs, expected or {})
    n_done = len(ok) + len(failed_as_expected)
    as_expected = f", {len(failed_as_expected)} of them failed as expected" if failed_as_expected else ""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    report = (
        f"# Benchmark results\n\ncommand: `anomalib-fewshot benchmark -c {config_path}`  \n"
        f"report written on: {machine_description()}  \n{_machines_line(rows)}updated: {stamp}  \n"
        f"progress: {n_done} of {len(jobs)} jobs finished{as_expected}"
        f"{' (complete)' if n_done == len(jobs) else ' (rerun the command to resume)'}\n\n"
        "Metrics on raw model outputs mapped monotonically to [0, 1] (no clamping, no post-processor); "
        "AUPRO at FPR ≤ 0.3; fit_s = shot selection + weights + pool/bank building + training (excludes "
        "validation; the runner validates on one batch only, the metrics never use that pass); "
        "torch_ms / openvino_ms = median per image at batch 1 of the full exported pipeline "
        "(OpenVINO f32); peak_rss_mb = peak resident memory of the job process. results.csv also records "
        "load_avg_1m per job: above the core count, other work shared the CPU and that row's timings are "
        "pessimistic.\n\n" + summarise(rows, jobs, expected) + _skipped_section(skipped) + _plots_section(rows, output)
    )
    return atomic_write_text(output / "results.md", report)


def _machines_line(rows: list[dict[str, str]]) -> str:
    """Which machines the finished rows ran on (timings are comparable only within one machine)."""
    counts = Counter(row.get("machine") or "not recorded" for row in rows if row.get("status") == "ok")
    if not counts:
        return ""
    listed = "; ".join(f"{name} ({n} row{'s' if n > 1 else ''})" for name, n in sorted(counts.items()))
    return f"rows ran on: {listed}  \n"


def _skipped_section(skipped: list[tuple[dict[str, Any], str]]) -> str:
    if not skipped:
        return ""
    reasons: dict[str, list[str]] = {}
    for job, reason in skipped:
        reasons.setdefault(reason, []).append("/".join(job_key(job)))
    lines = ["", "Left out on purpose:"]
    for reason, keys in reasons.items():
        shown = ", ".join(keys[:4]) + (", ..." if len(keys) > 4 else "")
        lines.append(f"- {reason}: {len(keys)} job(s) ({shown})")
    return "\n".join(lines) + "\n"


def _plots_section(rows: list[dict[str, str]], output: Path) -> str:
    from anomalib_fewshot.benchmark.plots import write_plots

    paths = write_plots(rows, output)
    return "".join(f"\n![{p.stem}]({p.name})\n" for p in paths)


def main(argv: list[str] | None = None) -> int:
    """``anomalib-fewshot benchmark -c CONFIG [--output DIR] [--merge CSV ...] [--report-only]``."""
    parser = argparse.ArgumentParser(prog="anomalib-fewshot benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", type=Path, required=True)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument(
        "--merge", type=Path, nargs="+", default=None, metavar="CSV",
        help="import this grid's jobs from other results.csv files (same job and profile) before running",
    )  # fmt: skip
    parser.add_argument("--report-only", action="store_true", help="rewrite results.md and plots; run no job")
    args = parser.parse_args(argv)
    output = run_grid(args.config, args.output, merge=args.merge, run=not args.report_only)
    print((output / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
