"""Where each model's OpenVINO graph spends its time: ``anomalib-fewshot profile`` of a grid's fitted checkpoints.

    python -m research.speed_profiles -c research/grids/decision_dev.yaml --dataset mvtec_screw --k-shot 1
        --output docs/benchmarks/speed/before [--threads 1] [--runs 20]                      (one line)

For every finished job of the grid on ``--dataset`` at ``--k-shot`` (seed 0 unless ``--seed``) whose checkpoint is
still in its ``jobs_dir``, the checkpoint is exported as a user would (``Engine.export`` to OpenVINO, and to ONNX so
that the profile names the modules), then profiled with :func:`anomalib_fewshot.profile.profile_graph` (f32, one
stream, ``--threads``). Writes ``<output>/<model>.md`` per model and ``<output>/summary.md``: each model's wall time
and its three costliest op types, Patchcore's first (the reference of issue 48's target). One machine, one run: only
the ratios and shares mean anything; the summary names the machine.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from anomalib_fewshot.benchmark.grid import job_work_dir, jobs_dir_of, load_grid
from anomalib_fewshot.benchmark.machine import machine_description
from anomalib_fewshot.benchmark.store import job_key, read_rows
from anomalib_fewshot.components.io.atomic import atomic_write_text
from anomalib_fewshot.errors import InvalidArgumentError
from anomalib_fewshot.profile import Profile, format_profile, profile_graph
from research.branch_pairs import checkpoint_of

ONNX_KWARGS = {"opset_version": 18}


def load_checkpoint(model_name: str, ckpt: Path) -> Any:
    """A grid job's checkpoint as a module: a registered model's own loader, else anomalib's model class."""
    from anomalib_fewshot.models import REGISTRY

    if model_name in REGISTRY:
        return REGISTRY[model_name].model_class.load_from_checkpoint(ckpt, map_location="cpu", weights_only=False)
    import anomalib.models as anomalib_models

    return getattr(anomalib_models, model_name).load_from_checkpoint(ckpt, map_location="cpu", weights_only=False)


def image_size(model: Any) -> tuple[int, int]:
    """The ``(H, W)`` the model was fitted at: its ``image_size``, else its pre-processor's ``Resize`` (baselines)."""
    size = getattr(model, "hparams", {}).get("image_size")
    if size is not None:
        return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
    transform = getattr(getattr(model, "pre_processor", None), "transform", None)
    for step in getattr(transform, "transforms", [transform]):
        if type(step).__name__ == "Resize":
            height, width = step.size if len(step.size) == 2 else (step.size[0], step.size[0])
            return int(height), int(width)
    msg = f"{type(model).__name__}: no image_size and no Resize in its pre-processor to profile it at"
    raise InvalidArgumentError(msg)


def export_both(model: Any, folder: Path) -> Path:
    """Export ``model`` to OpenVINO and ONNX under ``folder``; the ONNX file is put beside the ``.xml``."""
    from anomalib.deploy import ExportType
    from anomalib.engine import Engine

    engine = Engine(default_root_dir=folder, logger=False)
    xml = Path(engine.export(model, ExportType.OPENVINO, export_root=folder / "ov", onnx_kwargs=ONNX_KWARGS))
    onnx_path = Path(engine.export(model, ExportType.ONNX, export_root=folder / "onnx", onnx_kwargs=ONNX_KWARGS))
    target = xml.with_suffix(".onnx")
    target.write_bytes(onnx_path.read_bytes())
    data = onnx_path.with_name(onnx_path.name + ".data")
    if data.is_file():
        target.with_name(target.name + ".data").write_bytes(data.read_bytes())
    return xml


def raw_parity(model: Any, folder: Path, size: tuple[int, int], images: int = 2) -> float:
    """Largest ``|OpenVINO − eager|`` of the raw map over the eager map's range, on seeded random images.

    The model is exported once more without its post-processor (whose clamp could hide a difference), converted by
    OpenVINO from the ONNX file and run in f32 (:class:`~anomalib_fewshot.benchmark.int8.CompiledGraph`, which feeds a
    fixed-batch graph whole batches) beside the eager model on the same ``images`` images of ``size``.
    """
    import copy

    import numpy as np
    import torch
    from anomalib.deploy import ExportType
    from anomalib.engine import Engine

    from anomalib_fewshot.benchmark.int8 import CompiledGraph

    raw = copy.deepcopy(model).eval()
    raw.post_processor = None
    engine = Engine(default_root_dir=folder, logger=False)
    onnx_path = engine.export(raw, ExportType.ONNX, export_root=folder / "raw", onnx_kwargs=ONNX_KWARGS)
    data = torch.rand(images, 3, *size, generator=torch.Generator().manual_seed(0))
    _, got = CompiledGraph(Path(onnx_path), {"INFERENCE_PRECISION_HINT": "f32"})(data)
    with torch.no_grad():
        expected = raw(data).anomaly_map.reshape(got.shape).numpy()
    return float(np.abs(got.numpy() - expected).max() / max(float(np.ptp(expected)), 1e-12))


def summary(profiles: dict[str, Profile], parity: dict[str, float] | None = None) -> str:
    """Markdown: each model's ms per image, its ratio to Patchcore's, and its three costliest op types."""
    reference = profiles.get("Patchcore")
    lines = [
        "# OpenVINO profiles of the lite exports",
        "",
        f"{machine_description()}. f32, one stream; ms per image = median wall time per inference / the inference's "
        "batch (1 for our models; anomalib's Patchcore exports a fixed batch of 2). Issue 48's target: at most 2.0x "
        "Patchcore's ms per image.",
        "",
        "Parity: the largest |OpenVINO − eager| of the raw map (no post-processor) over its range, f32.",
        "",
        "| model | batch | ms / inference | ms / image | x Patchcore | parity "
        "| costliest op types (share of node time) |",
        "|---|---|---|---|---|---|---|",
    ]
    order = sorted(profiles, key=lambda name: (name != "Patchcore", name))
    for name in order:
        profile = profiles[name]
        ratio = f"{per_image_ms(profile) / per_image_ms(reference):.2f}" if reference is not None else "–"
        top = ", ".join(f"{row['op_type']} {row['share']:.0%}" for row in profile.by_type()[:3])
        lines.append(
            f"| [{name}]({name}.md) | {profile.input_shape[0]} | {profile.wall_ms:.1f} | {per_image_ms(profile):.1f} "
            f"| {ratio} | {f'{parity[name]:.1e}' if parity and name in parity else '–'} | {top} |"
        )
    return "\n".join(lines) + "\n"


def per_image_ms(profile: Profile) -> float:
    """Median wall time per image: per inference divided by the inference's batch."""
    return profile.wall_ms / profile.input_shape[0]


def speed_profiles(
    config_path: Path, dataset: str, k_shot: int, output: Path, seed: int = 0, threads: int = 1, runs: int = 20
) -> dict[str, Profile]:
    """Export and profile the grid's finished jobs on ``dataset`` at ``k_shot``; write the reports to ``output``."""
    config, jobs = load_grid(config_path)
    grid_output = Path(config.get("output", "benchmark_results"))
    ok = {job_key(row) for row in read_rows(grid_output / "results.csv") if row.get("status") == "ok"}
    jobs_dir = jobs_dir_of(config, grid_output)
    chosen = [j for j in jobs if j["dataset"] == dataset and int(j["k_shot"]) == k_shot and int(j["seed"]) == seed]
    chosen = [job for job in chosen if job_key(job) in ok]
    if not chosen:
        msg = f"{config_path}: no finished job on {dataset} at k = {k_shot}, seed {seed}"
        raise InvalidArgumentError(msg)
    output.mkdir(parents=True, exist_ok=True)
    profiles, parity = {}, {}
    for job in chosen:
        work_dir = job_work_dir(jobs_dir, job)
        ckpt = checkpoint_of(work_dir)
        if ckpt is None:
            print(f"{work_dir.name}: no checkpoint (re-run the job to profile its export)")
            continue
        model = load_checkpoint(job["model"], ckpt)
        size = image_size(model)
        xml = export_both(model, work_dir / "profile_export")
        profile = profile_graph(xml, threads=threads, runs=runs, size=size)
        profiles[job["model"]] = profile
        parity[job["model"]] = raw_parity(model, work_dir / "profile_export", size)
        atomic_write_text(output / f"{job['model']}.md", format_profile(profile))
        print(f"{job['model']}: {profile.wall_ms:.1f} ms, raw parity {parity[job['model']]:.1e}")
    atomic_write_text(output / "summary.md", summary(profiles, parity))
    return profiles


def main(argv: list[str] | None = None) -> int:
    """``python -m research.speed_profiles -c GRID --dataset D --k-shot K --output DIR``."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-c", "--config", type=Path, required=True, help="a grid YAML whose jobs kept checkpoints")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--k-shot", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    speed_profiles(args.config, args.dataset, args.k_shot, args.output, args.seed, args.threads, args.runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
