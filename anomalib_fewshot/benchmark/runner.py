"""Benchmark runner: grid of models × datasets × k × seeds → results.csv → results.md and plots.

Each job runs in its own Python process under a time limit (a hung or crashing job is recorded, not fatal),
every finished job is written to ``results.csv`` atomically, and a re-run skips jobs already in the CSV, so an
interrupted grid resumes where it stopped.

    anomalib-fewshot benchmark -c configs/benchmark/real.yaml

Grid YAML::

    output: docs/benchmarks/real            # results.csv, results.md and *.png go here
    jobs_dir: benchmark_results/real_jobs   # per-job logs, checkpoints, exports (default: <output>/jobs)
    archive_dir: docs/measurements/superseded   # rows replaced by --supersede (default: <output>/superseded)
    timeout_s: 3600                         # per job (a model entry may set its own timeout_s)
    evaluate_on: test                       # or dev: every job tests on the dataset's development split
    speed: true                             # false: no export and no torch/OpenVINO timing (accuracy-only grids)
    int8: false                             # true: FP32/bf16/INT8 OpenVINO columns; [scopes]: a screen (.int8)
    calibration_rules: [f1, fpr]            # optional: decision columns per calibration rule (image_f1[fpr] ...)
    dev_cache: benchmark_results/dev_splits # dev only: where the splits are built once (see benchmark.dev)
    dev_split: {cap: 200, seed: 0}          # dev only: the split's size and seed
    executor: {ray: {cpus_per_job: 2}}      # optional: jobs as Ray tasks (benchmark.ray_executor); default local
    grid:
      models:                               # plugin models take a shipped profile (+ overrides);
        - {model: Pcsnet, profile: pcsnet_lite}
        - {model: Patchcore}                # anomalib baselines on the same lite backbone and weights
        - {model: Padim, timeout_s: 900, threads: 1}   # threads: torch threads of that model's jobs (Ray: CPUs)
        - {model: Dfd, profile: dfd_lite, memory_gb: 6}  # Ray only: memory per job (also gpus: N)
      datasets:                             # MVTec-layout roots; datamodule: Visa for anomalib's VisA layout
        - {name: mvtec_bottle, root: ../shared/data/mvtec_ad, category: bottle}
        - {name: bracket, root: /data/bracket, normal_dir: good, abnormal_dir: defect, mask_dir: mask}
          # an anomalib Folder (your labelled images; mask_dir and normal_test_dir optional: benchmark.datasets)
      k_shot: [1, 2, 4, full]               # full = every normal training image
      seeds: [0, 1, 2]                      # few-shot seeds: which images are the shots
      train_seeds: [0, 1, 2, 3, 4]          # optional: the fit's randomness (default: each job's few-shot seed)
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

``--only MODEL[:VARIANT] ...`` runs only the jobs of those models (and variants; the variant is everything after the
first ``:``); the report still covers the whole grid. ``--k-shot K ...``, ``--seeds S ...`` and ``--datasets NAME
...`` narrow the run the same way (``--only Dfd --k-shot 1 --seeds 0``: one job per dataset). ``--only X
--supersede`` re-runs X's jobs even when they have an ``ok`` row and replaces their rows in place; the replaced rows
are appended to ``<archive_dir>/<output folder name>_<YYYY-MM-DD>.csv`` (default ``<output>/superseded``) with a
``superseded_utc`` column. ``<output>/supersede.json`` lists the jobs still to re-run: rerunning the same command
after a kill continues with those. A failed or timed-out re-run never replaces an ok row (it is archived, the job
stays listed). Full rules: :mod:`anomalib_fewshot.benchmark.supersede`. ``--retime [--only X]`` re-times the
exported OpenVINO graphs of finished rows (and the Patchcore rows of the same dataset, k and seed) interleaved in
one process and writes ``retime.csv`` / ``retime.md`` (:mod:`anomalib_fewshot.benchmark.retime`). ``--ray
[ADDRESS]`` runs the jobs as tasks of a Ray cluster, the driver alone writing ``results.csv``
(:mod:`anomalib_fewshot.benchmark.ray_executor`; also the YAML's ``executor: {ray: {...}}``, ``--local`` overrides).

Python API: ``run_grid(Path("configs/benchmark/real.yaml"))``. The grid, CSV store and report live in
:mod:`.grid`, :mod:`.store` and :mod:`.report`; their names are re-exported here.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from anomalib_fewshot.benchmark.dev import ensure_dev_splits, on_dev_split
from anomalib_fewshot.benchmark.grid import (
    FULL,
    expected_failures,
    head_path,
    head_specs,
    job_work_dir,
    jobs_dir_of,
    load_grid,
    select_jobs,
    select_values,
    skipped_jobs,
)
from anomalib_fewshot.benchmark.lifeline import child_env
from anomalib_fewshot.benchmark.ray_executor import add_executor_flags, executor_choice, executor_settings, run_on_ray
from anomalib_fewshot.benchmark.report import METRICS, TIMINGS, summarise, write_report
from anomalib_fewshot.benchmark.store import (
    KEY_FIELDS,
    finished_keys,
    job_key,
    job_label,
    job_row,
    merge_rows,
    read_rows,
    upsert_row,
    upsert_rows,
)
from anomalib_fewshot.benchmark.supersede import (
    DEFAULT_ARCHIVE_NAME,
    STATE_NAME,
    SupersedeState,
    write_superseding_row,
)
from anomalib_fewshot.components.lifecycle.spec import Prerequisite
from anomalib_fewshot.errors import InvalidArgumentError
from anomalib_fewshot.quiet import add_verbose_flag

__all__ = [
    "FULL",
    "KEY_FIELDS",
    "METRICS",
    "TIMINGS",
    "ensure_head",
    "expected_failures",
    "finished_keys",
    "head_path",
    "head_specs",
    "job_key",
    "load_grid",
    "main",
    "merge_rows",
    "prerequisite",
    "read_rows",
    "run_grid",
    "run_job",
    "skipped_jobs",
    "summarise",
    "upsert_row",
    "upsert_rows",
    "write_report",
]


def prerequisite(name: str) -> Prerequisite:
    """The registered prerequisite step called ``name`` (a grid's ``heads:`` are the step named ``head``)."""
    from anomalib_fewshot.models import REGISTRY

    steps = {step.name: step for spec in REGISTRY.values() for step in spec.prerequisites}
    if name not in steps:
        msg = f"no registered model has a prerequisite step {name!r} (registered: {sorted(steps)})"
        raise InvalidArgumentError(msg)
    return steps[name]


def ensure_head(spec: dict[str, Any], jobs_dir: Path, timeout_s: float) -> tuple[Path | None, str]:
    """Run the ``head`` prerequisite step for ``spec`` unless its file exists; return (path or None, error)."""
    path = head_path(jobs_dir, spec)
    if path.is_file():
        return path, ""
    path.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "anomalib_fewshot.cli", *prerequisite("head").command(spec, path)]
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


def run_job(job: dict[str, Any], jobs_dir: Path, timeout_s: float, cwd: str | None = None) -> dict[str, Any]:
    """Run one job in a subprocess (work folder under ``jobs_dir``); return its row (status ok/failed/timeout).

    The job process dies with this process (:mod:`.lifeline`); ``cwd`` is its working folder (default: this
    process's), where relative paths of the job resolve.
    """
    work = job_work_dir(jobs_dir, job)
    work.mkdir(parents=True, exist_ok=True)
    result_path = work / "result.json"
    result_path.unlink(missing_ok=True)
    spec = {**job, "work_dir": str(work), "k_shot": None if job["k_shot"] == FULL else job["k_shot"]}
    env = child_env({**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")})
    start = time.perf_counter()
    row = job_row(job)
    if job.get("dev_generator"):
        row["dev_generator"] = job["dev_generator"]  # the frozen defect generator the row was measured with
    log_path = work / "log.txt"
    returncode = None
    with log_path.open("w") as log:
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "anomalib_fewshot.benchmark.job", json.dumps(spec), str(result_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                timeout=timeout_s,
                check=False,
            )
            returncode = proc.returncode
            status = "ok" if returncode == 0 and result_path.is_file() else "failed"
        except subprocess.TimeoutExpired:
            status = "timeout"
    row["status"] = status
    row["wall_s"] = round(time.perf_counter() - start, 1)
    if status == "ok":
        row.update(json.loads(result_path.read_text()))
    else:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] if log_path.is_file() else []
        detail = tail[0][:300] if tail else ""
        if status == "failed" and not detail:  # nothing logged: a signal (e.g. killed for memory) or a silent exit
            reason = "no result.json written" if returncode == 0 else f"exit code {returncode}"
            detail = f"{reason}, nothing logged (log: {log_path})"
        row["error"] = f"{status}: {detail}"
    return row


def run_grid(
    config_path: Path,
    output: Path | None = None,
    merge: list[Path] | None = None,
    run: bool = True,
    only: list[str] | None = None,
    supersede: bool = False,
    archive_dir: Path | None = None,
    k_shots: list[int] | None = None,
    seeds: list[int] | None = None,
    datasets: list[str] | None = None,
    ray: bool | str | None = None,
) -> Path:
    """Run (or resume) the grid of ``config_path``; return the results folder.

    Args:
        config_path: The grid YAML.
        output: Results folder (default: the YAML's ``output``).
        merge: Other ``results.csv`` files whose rows of this grid's jobs are imported first (see ``merge_rows``).
        run: False writes the report (and merges) without running any job.
        only: ``MODEL`` or ``MODEL:VARIANT`` selectors: run only those jobs (see :func:`.grid.select_jobs`); the
            report still covers the whole grid.
        supersede: Re-run the ``only`` jobs even when finished and replace their rows, archiving the old ones;
            resumable through ``<output>/supersede.json`` (rules: :mod:`anomalib_fewshot.benchmark.supersede`).
        archive_dir: Folder of the superseded-rows archive (default: the YAML's ``archive_dir``, else
            ``<output>/superseded``).
        k_shots: Run only the jobs of these shot counts (with ``only``: both must match); the report still covers
            the whole grid.
        seeds: Run only the jobs of these seeds (as ``k_shots``).
        datasets: Run only the jobs of these dataset names (as ``k_shots``).
        ray: Where the jobs run. None: as the YAML's ``executor`` says (default: one after another here); False:
            here; True: as tasks of a Ray cluster (:mod:`.ray_executor`; the YAML's address, else a single-node
            cluster started here); an address: that Ray cluster.

    Raises:
        InvalidArgumentError: ``supersede`` without ``only`` or with ``run=False``; an unknown model or variant in
            ``only``; a pending supersede of another selection in ``output``.

    """
    if supersede and not only:
        msg = "--supersede re-runs finished jobs and replaces their rows: name them with --only MODEL[:VARIANT]"
        raise InvalidArgumentError(msg)
    if supersede and not run:
        msg = "--supersede runs jobs; it cannot be combined with --report-only"
        raise InvalidArgumentError(msg)
    config, jobs = load_grid(config_path)
    ray_settings = executor_settings(config_path, config, ray)
    narrowed = select_values(select_jobs(jobs, only), k_shot=k_shots, seed=seeds, dataset=datasets)
    selected = {job_key(job) for job in narrowed}
    output = Path(output or config.get("output", "benchmark_results"))
    output.mkdir(parents=True, exist_ok=True)
    csv_path = output / "results.csv"
    jobs_dir = jobs_dir_of(config, output)
    skipped = skipped_jobs(config, jobs)
    skipped_keys = {job_key(job) for job, _ in skipped}
    jobs = [job for job in jobs if job_key(job) not in skipped_keys]
    expected = expected_failures(config, jobs)
    if merge:
        print(f"merged {merge_rows(csv_path, list(merge), jobs)} row(s) from {', '.join(map(str, merge))}")
    if not run:
        write_report(config_path, output, jobs, skipped, expected)
        return output
    chosen = [job for job in jobs if job_key(job) in selected]
    state = None
    if supersede:
        archive = Path(archive_dir or config.get("archive_dir") or output / DEFAULT_ARCHIVE_NAME)
        state, resumed = SupersedeState.start(output, list(only or []), [job_key(job) for job in chosen], archive)
        if resumed:
            print(f"--supersede: resuming, {len(state.keys)} of {len(chosen)} job(s) left ({state.path})")
        todo = [job for job in chosen if job_key(job) in set(state.keys)]
    else:
        if (output / STATE_NAME).is_file():
            print(f"note: {output / STATE_NAME} lists jobs of an unfinished --supersede; rerun that command")
        ok, failed_as_expected = finished_keys(read_rows(csv_path), chosen, expected)
        todo = [job for job in chosen if job_key(job) not in ok | failed_as_expected]
    dev_roots = ensure_dev_splits(config, {job["dataset"] for job in todo if job.get("split") == "dev"})
    heads = head_specs(config)
    head_files: dict[str, tuple[Path | None, str]] = {}
    for name in sorted({job["head"] for job in todo if job.get("head")}):
        head_files[name] = ensure_head(heads[name], jobs_dir, float(config.get("timeout_s", 3600)))
    runnable, failed = [], []
    for job in todo:
        if job.get("split") == "dev":
            job = on_dev_split(job, dev_roots)
        if job.get("head") and head_files[job["head"]][0] is None:
            failed.append(job_row(job, status="failed", error=head_files[job["head"]][1]))
            continue
        if job.get("head"):
            argument = prerequisite("head").argument
            job = {**job, "overrides": {**job["overrides"], argument: str(head_files[job["head"]][0])}}
        runnable.append(job)

    def record(row: dict[str, Any]) -> None:
        """Write one finished job's row (the driver alone writes), then the report, which follows the grid."""
        if state is None:
            upsert_row(csv_path, row)
        else:
            write_superseding_row(csv_path, row, state)
        write_report(config_path, output, jobs, skipped, expected)

    for row in failed:
        record(row)
    done = len(chosen) - len(todo) + len(failed)
    if ray_settings is not None:
        run_on_ray(run_job, runnable, jobs_dir, ray_settings, record, total=len(chosen), done=done)
    else:
        from rich.progress import Progress

        with Progress() as progress:
            task = progress.add_task("benchmark jobs", total=len(chosen), completed=done)
            for job in runnable:
                progress.update(task, description=job_label(job))
                record(run_job(job, jobs_dir, float(job["timeout_s"])))
                progress.advance(task)
    write_report(config_path, output, jobs, skipped, expected)
    if state is not None and state.keys:
        print(
            f"--supersede: {len(state.keys)} job(s) were not replaced (failed re-runs keep their ok rows); "
            f"{state.path} still lists them: rerun the command to retry, or delete it to keep the old rows"
        )
    return output


def main(argv: list[str] | None = None) -> int:
    """``anomalib-fewshot benchmark -c CONFIG [--output DIR] [--merge CSV ...] [--report-only] [--only ...]``.

    Also ``--only M[:V] ... --supersede`` and ``--retime [--only ...] [--retime-images N]`` (see the module doc).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="anomalib-fewshot benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", type=Path, required=True)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument(
        "--merge", type=Path, nargs="+", default=None, metavar="CSV",
        help="import this grid's jobs from other results.csv files (same job and profile) before running",
    )  # fmt: skip
    parser.add_argument("--report-only", action="store_true", help="rewrite results.md and plots; run no job")
    parser.add_argument(
        "--only", nargs="+", action="extend", default=None, metavar="MODEL[:VARIANT]",
        help="run (or --supersede, --retime) only the jobs of these models / variants (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--supersede", action="store_true",
        help="with --only: re-run those jobs even when finished, replace their rows, archive the old ones "
        "(resumable: rerun the same command after a kill)",
    )  # fmt: skip
    parser.add_argument(
        "--retime", action="store_true",
        help="run no job: re-time the exported OpenVINO graphs of finished rows (--only, and the Patchcore rows "
        "of the same dataset/k/seed) interleaved in one process; writes retime.csv and retime.md",
    )  # fmt: skip
    parser.add_argument(
        "--k-shot", type=int, nargs="+", default=None, metavar="K",
        help="run (or --supersede) only the jobs of these shot counts of the grid",
    )  # fmt: skip
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=None, metavar="SEED",
        help="run (or --supersede) only the jobs of these seeds of the grid",
    )  # fmt: skip
    parser.add_argument(
        "--datasets", nargs="+", default=None, metavar="NAME",
        help="run (or --supersede) only the jobs of these datasets of the grid",
    )  # fmt: skip
    parser.add_argument("--retime-images", type=int, default=30, metavar="N", help="test images per graph (30)")
    add_executor_flags(parser, "the jobs", "grid")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    if args.retime:
        if args.supersede or args.merge or args.report_only or args.ray is not None:
            msg = "--retime runs no job: it cannot be combined with --supersede, --merge, --report-only or --ray"
            raise InvalidArgumentError(msg)
        from anomalib_fewshot.benchmark.retime import retime_grid

        command = shlex.join(["anomalib-fewshot", "benchmark", *argv])
        md = retime_grid(args.config, args.output, only=args.only, n_images=args.retime_images, command=command)
        print(md.read_text())
        return 0
    output = run_grid(
        args.config,
        args.output,
        merge=args.merge,
        run=not args.report_only,
        only=args.only,
        supersede=args.supersede,
        k_shots=args.k_shot,
        seeds=args.seeds,
        datasets=args.datasets,
        ray=executor_choice(args),
    )
    print((output / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
