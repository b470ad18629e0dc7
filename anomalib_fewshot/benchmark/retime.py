"""Re-timing: the exported OpenVINO graphs of finished rows, timed interleaved in one process on the same inputs.

Timings of different VMs (and of one VM at different hours) differ up to 2×, so the ``openvino_ms`` of rows that
ran at different times are hard to compare. This mode measures again, in one process: for the chosen finished
rows (``--only``, or every ok row of the grid) and anomalib's ``Patchcore`` rows of the same dataset, k and seed,
it loads each job's exported graph (``<jobs_dir>/<job>/export/**/*.xml``, written by the job) with
``OpenVINOInferencer(xml, device="CPU", config={"INFERENCE_PRECISION_HINT": "f32"})`` and, per dataset, times all
of them on the first N test images of that dataset: warm-up on the first 3 images (each graph once), then for
each image each graph once, in an order rotated by one graph per image. A graph with a static batch (anomalib's
Patchcore exports with batch 2) gets the image repeated to its batch and its time divided by it, as in the job.
The figure per row is the median ms per image; the ratio to the Patchcore row of the same dataset/k/seed is the
comparable result. Then, one graph at a time, what else a deployment pays
(:func:`.timing.deployment_figures`): compile time without a model cache, first inference, size on disk and
images/s in OpenVINO's throughput mode at batch 8.

    anomalib-fewshot benchmark -c configs/benchmark/real.yaml --retime --only Ed
    python -m anomalib_fewshot.benchmark.retime -c configs/benchmark/real.yaml --only Ed [--images 30]

Rows are written (replacing earlier re-timings of the same job) to ``retime.csv`` in the grid's output folder,
with ms per image, ``ratio_to_patchcore``, the results.csv ``openvino_ms`` of the row, the machine, the time and
the command; ``retime.md`` shows them as a table. A finished row without an export in its work folder (for
example a row merged from another machine) is an error naming the row and the folder; nothing is timed then.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anomalib_fewshot.benchmark.grid import job_work_dir, jobs_dir_of, load_grid, select_jobs
from anomalib_fewshot.benchmark.job import EVAL_BATCH_SIZE
from anomalib_fewshot.benchmark.machine import cpu_name
from anomalib_fewshot.benchmark.store import KEY_FIELDS, job_key, job_label, read_rows, upsert_rows
from anomalib_fewshot.benchmark.timing import Graph, deployment_figures, time_interleaved
from anomalib_fewshot.components.io.atomic import atomic_write_text
from anomalib_fewshot.errors import AnomalibFewshotError, InvalidArgumentError, MissingFileError

if TYPE_CHECKING:
    import numpy as np

BASELINE = "Patchcore"


def find_export(jobs_dir: Path, job: dict[str, Any]) -> Path:
    """The exported OpenVINO graph of ``job``: ``<work>/export/**/*.xml`` (``weights/openvino/model.xml``).

    Raises:
        MissingFileError: No ``.xml`` under the job's export folder (names the row and the folder).

    """
    export = job_work_dir(jobs_dir, job) / "export"
    found = sorted(export.rglob("*.xml")) if export.is_dir() else []
    if not found:
        msg = (
            f"--retime: row {job_label(job)} has no exported OpenVINO graph: expected an .xml under "
            f"{export} (the job's work folder; rows merged from another machine have no export here: re-time "
            "where the job ran, or re-run it with --only ... --supersede)"
        )
        raise MissingFileError(msg)
    preferred = [p for p in found if p.parent.name == "openvino" and p.name == "model.xml"]
    return (preferred or sorted(found, key=lambda p: p.stat().st_mtime))[-1]


def load_graph(xml: Path) -> Graph:
    """Load ``xml`` with anomalib's ``OpenVINOInferencer`` on the CPU in f32; return (predict, static batch)."""
    from anomalib.deploy import OpenVINOInferencer

    inferencer = OpenVINOInferencer(xml, device="CPU", config={"INFERENCE_PRECISION_HINT": "f32"})
    batch_dim = inferencer.model.inputs[0].get_partial_shape()[0]
    return inferencer.predict, (batch_dim.get_length() if batch_dim.is_static else 1)


def load_test_images(job: dict[str, Any], n_images: int) -> list[np.ndarray]:
    """The first ``n_images`` test images of ``job``'s dataset as the job times them: (1, 3, H, W) float in [0, 1]."""
    import anomalib.data as anomalib_data

    root = Path(job["root"])
    if not any((folder / str(job["category"])).is_dir() for folder in (root, root / "visa_pytorch")):
        # anomalib's prepare_data would try to download a missing category
        msg = f"--retime: category '{job['category']}' of dataset {job['dataset']} not found under '{root}'"
        raise MissingFileError(msg)
    datamodule = getattr(anomalib_data, job.get("datamodule", "MVTecAD"))(
        root=job["root"], category=job["category"], num_workers=0, eval_batch_size=EVAL_BATCH_SIZE, train_batch_size=8
    )
    datamodule.prepare_data()
    datamodule.setup()
    count = min(n_images, len(datamodule.test_data))
    return [datamodule.test_data[i].image[None].float().numpy() for i in range(count)]


def retime_grid(
    config_path: Path,
    output: Path | None = None,
    only: Sequence[str] | None = None,
    n_images: int = 30,
    command: str | None = None,
) -> Path:
    """Re-time the finished rows of the grid (``only``, plus their Patchcore rows); return ``retime.md``.

    Args:
        config_path: The grid YAML.
        output: Results folder (default: the YAML's ``output``); ``retime.csv`` and ``retime.md`` go there.
        only: ``MODEL[:VARIANT]`` selectors (see :func:`.grid.select_jobs`); every ok row when empty.
        n_images: Test images per dataset (the first ones, as in the job).
        command: The command line recorded with the rows.

    Raises:
        InvalidArgumentError: ``n_images`` < 1, an unknown model/variant in ``only``, or no finished row selected.
        MissingFileError: A chosen row has no export in its work folder.

    """
    if n_images < 1:
        msg = f"--retime: the number of images must be at least 1, got {n_images}"
        raise InvalidArgumentError(msg)
    config, jobs = load_grid(config_path)
    output = Path(output or config.get("output", "benchmark_results"))
    jobs_dir = jobs_dir_of(config, output)
    ok_rows = {job_key(r): r for r in read_rows(output / "results.csv") if r.get("status") == "ok"}
    chosen = [job for job in select_jobs(jobs, only) if job_key(job) in ok_rows]
    if not chosen:
        msg = f"--retime: no finished (ok) row of {' '.join(only) if only else 'the grid'} in {output / 'results.csv'}"
        raise InvalidArgumentError(msg)
    cells = {(job["dataset"], str(job["k_shot"]), str(job["seed"])) for job in chosen}
    chosen_keys = {job_key(job) for job in chosen}
    baselines = [
        job
        for job in jobs
        if job["model"] == BASELINE
        and (job["dataset"], str(job["k_shot"]), str(job["seed"])) in cells
        and job_key(job) in ok_rows
        and job_key(job) not in chosen_keys
    ]
    timed = chosen + baselines
    exports = {job_key(job): find_export(jobs_dir, job) for job in timed}  # every export first: fail before timing
    machine = cpu_name()
    command = command or shlex.join(["python", "-m", "anomalib_fewshot.benchmark.retime", "-c", str(config_path)])
    out_rows = []
    for dataset in dict.fromkeys(job["dataset"] for job in timed):
        group = [job for job in timed if job["dataset"] == dataset]
        images = load_test_images(group[0], n_images)
        graphs = {job_key(job): load_graph(exports[job_key(job)]) for job in group}
        ms = time_interleaved(graphs, images)
        batches = {key: batch for key, (_, batch) in graphs.items()}
        del graphs  # the deployment figures below compile and run one graph at a time
        figures = {job_key(job): deployment_figures(exports[job_key(job)], images[0]) for job in group}
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M")
        reference = {}
        for job in group:
            if job["model"] == BASELINE:
                reference.setdefault((str(job["k_shot"]), str(job["seed"])), ms[job_key(job)])
        for job in group:
            key = job_key(job)
            ref = reference.get((str(job["k_shot"]), str(job["seed"])))
            out_rows.append(
                {
                    **dict(zip(KEY_FIELDS, key, strict=True)),
                    "profile": job["profile"],
                    "ms_per_image": round(ms[key], 2),
                    "patchcore_ms_per_image": "" if ref is None else round(ref, 2),
                    "ratio_to_patchcore": "" if ref is None else round(ms[key] / ref, 3),
                    "results_openvino_ms": ok_rows[key].get("openvino_ms", ""),
                    "openvino_batch": batches[key],
                    "n_images": len(images),
                    **figures[key],
                    "export": str(exports[key]),
                    "machine": machine,
                    "timed_utc": stamp,
                    "command": command,
                }
            )
    missing = sorted(job_label(r) for r in out_rows if r["ratio_to_patchcore"] == "")
    if missing:
        print(f"--retime: no finished {BASELINE} row of the same dataset/k/seed (no ratio) for: {', '.join(missing)}")
    upsert_rows(output / "retime.csv", out_rows, in_place=True)
    return write_retime_report(output)


def write_retime_report(output: Path) -> Path:
    """Write ``retime.md`` from ``retime.csv``: one table row per re-timed job, then the commands that timed them."""
    rows = read_rows(output / "retime.csv")

    def order(row: dict[str, str]) -> tuple[Any, ...]:
        k = row["k_shot"]
        seed = row["seed"]
        return (
            row["dataset"],
            int(k) if k.isdigit() else float("inf"),
            int(seed) if seed.isdigit() else seed,
            row["model"] != BASELINE,
            row["model"],
            row["variant"],
        )

    header = ["model", "variant", "dataset", "k", "seed", "train seed", "split", "ms / image", "ratio to Patchcore",
              "Patchcore ms / image", "results.csv openvino_ms", "batch", "images", "compile s",
              "first inference ms", "size MB", "images/s (throughput)", "throughput batch", "machine",
              "timed (UTC)"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in sorted(rows, key=order):
        cells = list(job_key(row))
        cells += [row.get(f) or "–" for f in ("ms_per_image", "ratio_to_patchcore", "patchcore_ms_per_image",
                                              "results_openvino_ms", "openvino_batch", "n_images", "compile_s",
                                              "first_inference_ms", "size_mb", "throughput_ips", "throughput_batch",
                                              "machine", "timed_utc")]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    runs = dict.fromkeys((row.get("timed_utc", ""), row.get("command", "")) for row in rows)
    commands = "".join(f"- {stamp} UTC: `{command}`\n" for stamp, command in sorted(runs))
    text = (
        "# OpenVINO re-timing (interleaved, one process)\n\n"
        "Each dataset's graphs were loaded in one process and timed in turn on the same inputs (the first test "
        "images of the dataset; warm-up first, then each graph once per image in rotating order; OpenVINO f32 on "
        "the CPU, a static batch divided out). ms / image is the median; timings of different machines or runs "
        "differ up to 2×, so the ratio to the Patchcore row of the same dataset, k and seed (timed in the same "
        "run) is the comparable figure: each row keeps the Patchcore time of its own run (Patchcore ms / image), "
        "also when a later run re-times that Patchcore row. results.csv openvino_ms is the job's own measurement, "
        "for comparison. Then, one graph at a time: compile s = reading and compiling the graph in a fresh OpenVINO "
        "Core without a model cache (an edge PC's first start), first inference ms = its first run, size MB = .xml + "
        ".bin, images/s = throughput with OpenVINO's THROUGHPUT hint and its optimal number of parallel requests, "
        "each request a batch of 8 images (a static export batch kept: throughput batch).\n\n"
        + "\n".join(lines)
        + "\n\nTimed by:\n"
        + commands
    )
    return atomic_write_text(output / "retime.md", text)


def main(argv: list[str] | None = None) -> int:
    """``python -m anomalib_fewshot.benchmark.retime -c CONFIG [--output DIR] [--only M[:V] ...] [--images N]``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    prog = "python -m anomalib_fewshot.benchmark.retime"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", type=Path, required=True)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--only", nargs="+", action="extend", default=None, metavar="MODEL[:VARIANT]")
    parser.add_argument("--images", type=int, default=30, metavar="N", help="test images per dataset (30)")
    args = parser.parse_args(argv)
    command = shlex.join([*prog.split(), *argv])
    try:
        report = retime_grid(args.config, args.output, only=args.only, n_images=args.images, command=command)
    except AnomalibFewshotError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    print(report.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
