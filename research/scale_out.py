"""What running a grid on Ray costs and saves here, and what a cluster would do to the published grid (issue 49).

    python -m research.scale_out tiny --jobs 24 --output docs/benchmarks/scale_out      # generated data, tiny models
    python -m research.scale_out slice --output docs/benchmarks/scale_out               # Pcsnet + Patchcore, bottle

``tiny``: a grid of ``--jobs`` tiny jobs (PCSNet and ED tiny configurations and anomalib's Patchcore on generated
data, one thread each, seeds 0..) run twice, one after another: by the local runner (one job at a time) and on a
single-node Ray cluster with ``--workers`` CPUs (one per job). ``slice``: one real slice (the lite PCSNet and
Patchcore on MVTec AD bottle, k = 1, seeds 0-2, the test split, no export) both ways. Both print and write
``<output>/<mode>.md``: the wall times and their ratio, the per-task overhead of Ray (the driver's wall time against
the jobs' own times), and whether the two runs gave the same job keys and metrics. Run nothing else beside it.

``project`` (no run): the published grid's wall time on N nodes, from its measured per-job times
(``docs/benchmarks/real/results.csv``) and the measured per-task overhead, by longest-job-first list scheduling —
a projection, labelled as such.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from anomalib_fewshot.benchmark import runner, store
from anomalib_fewshot.benchmark.machine import machine_description

METRICS = ("image_auroc", "pixel_auroc", "aupro", "image_f1max", "pixel_f1max", "image_f1")


def _tiny_grid(folder: Path, n_jobs: int) -> Path:
    from anomalib_fewshot.data.demo import make_demo_dataset
    from anomalib_fewshot.models import REGISTRY

    data = folder / "data"
    if not data.is_dir():
        make_demo_dataset(data, "plate", n_train=6, n_test_good=4, n_test_defect=4, size=64, seed=0)
    models = []
    for name in ("Pcsnet", "Ed"):
        tiny = {k: v for k, v in REGISTRY[name].tiny_config.items() if k != "k_shot"}
        models.append({"model": name, "variant": "tiny", "profile": REGISTRY[name].lite_profile, "overrides": tiny,
                       "threads": 1})  # fmt: skip
    models.append({"model": "Patchcore", "threads": 1})
    seeds = list(range(-(-n_jobs // len(models))))
    return _write(folder, {"speed": False, "timeout_s": 1800, "grid": {
        "models": models, "datasets": [{"name": "demo", "root": str(data), "category": "plate"}],
        "k_shot": [1], "seeds": seeds}})  # fmt: skip


def _slice_grid(folder: Path) -> Path:
    models = [{"model": "Pcsnet", "profile": "pcsnet_lite", "threads": 1}, {"model": "Patchcore", "threads": 1}]
    dataset = {"name": "mvtec_bottle", "root": str(Path("../shared/data/mvtec_ad").resolve()), "category": "bottle"}
    return _write(folder, {"speed": False, "timeout_s": 5400, "grid": {
        "models": models, "datasets": [dataset], "k_shot": [1], "seeds": [0, 1, 2]}})  # fmt: skip


def _write(folder: Path, config: dict[str, Any]) -> Path:
    config = {"output": str(folder / "out"), "jobs_dir": str(folder / "jobs"), **config}
    path = folder / "grid.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _run(path: Path, ray: bool) -> tuple[float, list[dict[str, str]]]:
    start = time.perf_counter()
    runner.run_grid(path, ray=ray)
    wall = time.perf_counter() - start
    return wall, store.read_rows(path.parent / "out" / "results.csv")


def compare(mode: str, workers: int, n_jobs: int, output: Path) -> str:
    """Run the grid locally, then on Ray; return (and write) the Markdown report."""
    import ray

    with tempfile.TemporaryDirectory(prefix="scale_out_") as tmp:
        runs = {}
        for executor in ("local", "ray"):
            folder = Path(tmp) / executor
            path = _tiny_grid(folder, n_jobs) if mode == "tiny" else _slice_grid(folder)
            if executor == "ray":
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
            try:
                runs[executor] = _run(path, ray=executor == "ray")
            finally:
                if executor == "ray":
                    ray.shutdown()
    (local_wall, local_rows), (ray_wall, ray_rows) = runs["local"], runs["ray"]
    local = {store.job_key(r): r for r in local_rows}
    remote = {store.job_key(r): r for r in ray_rows}
    same_keys = sorted(local) == sorted(remote)
    worst = max(
        (abs(float(local[k][m]) - float(remote[k][m])) for k in local if k in remote for m in METRICS
         if local[k].get(m) not in (None, "") and remote[k].get(m) not in (None, "")),
        default=0.0,
    )  # fmt: skip
    jobs_s = sum(float(r["wall_s"]) for r in ray_rows)
    overhead = (ray_wall * workers - jobs_s) / max(len(ray_rows), 1)
    local_jobs_s = sum(float(r["wall_s"]) for r in local_rows)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# Scale-out: {mode} grid, local runner vs Ray ({workers} workers, one machine)",
        "",
        f"Command: `python -m research.scale_out {mode}{f' --jobs {n_jobs}' if mode == 'tiny' else ''} "
        f"--workers {workers}`; {stamp}; "
        f"{machine_description()}.",
        "",
        "| executor | jobs | ok | wall s | sum of the jobs' own s | per-task overhead s |",
        "|---|---|---|---|---|---|",
        f"| local (one at a time) | {len(local_rows)} | {sum(r['status'] == 'ok' for r in local_rows)} | "
        f"{local_wall:.0f} | {local_jobs_s:.0f} | {(local_wall - local_jobs_s) / max(len(local_rows), 1):.1f} |",
        f"| Ray, {workers} workers | {len(ray_rows)} | {sum(r['status'] == 'ok' for r in ray_rows)} | {ray_wall:.0f} "
        f"| {jobs_s:.0f} | {overhead:.1f} |",
        "",
        f"Wall time ratio local / Ray: **{local_wall / ray_wall:.2f}x**. Same job keys: {same_keys}; largest metric "
        f"difference between the two runs: {worst:.2g}. Per-task overhead = (wall × workers − the jobs' own wall "
        "time) / jobs: Ray's scheduling, the worker start and the driver's row writing, per job.",
    ]
    text = "\n".join(lines) + "\n"
    output.mkdir(parents=True, exist_ok=True)
    (output / f"{mode}.md").write_text(text)
    return text


def project(results: Path, nodes: list[int], overhead_s: float) -> str:
    """The published grid's wall time on each node count: longest-job-first list scheduling of its measured jobs."""
    with results.open() as handle:
        walls = sorted((float(r["wall_s"]) + overhead_s for r in csv.DictReader(handle) if r.get("wall_s")),
                       reverse=True)  # fmt: skip
    lines = [
        f"Projection (not a measurement): the {len(walls)} jobs of {results} (their measured wall_s, plus "
        f"{overhead_s:.1f} s of per-task overhead each), one job per node at a time, longest first.",
        "",
        "| nodes | projected wall h | longest job h |",
        "|---|---|---|",
    ]
    for count in nodes:
        loads = [0.0] * count
        for wall in walls:
            loads[loads.index(min(loads))] += wall
        lines.append(f"| {count} | {max(loads) / 3600:.2f} | {walls[0] / 3600:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Command line (see the module doc)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("tiny", "slice", "project"))
    parser.add_argument("--jobs", type=int, default=24, help="tiny: number of jobs (24)")
    parser.add_argument("--workers", type=int, default=2, help="Ray workers, one CPU each (2)")
    parser.add_argument("--output", type=Path, default=Path("docs/benchmarks/scale_out"))
    parser.add_argument("--results", type=Path, default=Path("docs/benchmarks/real/results.csv"))
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--overhead-s", type=float, default=0.0, help="project: per-task overhead (measured)")
    args = parser.parse_args(argv)
    if args.mode == "project":
        text = project(args.results, args.nodes, args.overhead_s)
        args.output.mkdir(parents=True, exist_ok=True)
        (args.output / "projection.md").write_text(text)
    else:
        text = compare(args.mode, args.workers, args.jobs, args.output)
    print(text)


if __name__ == "__main__":
    main()
