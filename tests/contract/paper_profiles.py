"""The paper profiles (``configs/model/<m>.yaml``: WideResNet-50, CLIP ViT-L/14-336) are runnable, with random weights.

No test elsewhere builds them: users with internet get them by default, and nothing downloads weights here. For one
model, :func:`check` builds the paper profile with ``pre_trained: false`` at its paper geometry (backbone, layers,
image size, crop), one shot and the smallest batch the method allows, then

1. ``prepare_fit`` on the shot and one training step through ``training_step`` (finite loss, finite gradients);
2. ``finish_fit`` (the score statistics a fit sets after training) and an eval forward of the whole module
   (pre-processor, model) on two images, with finite raw outputs;
3. ``torch.onnx.export`` (torch.export, opset 18) of that module and OpenVINO (f32) on the same images: the raw
   outputs equal the eager ones within the fast tier's tolerance.

Only the pool sizes shrink (DFD's ``samples_per_shot``, FDSL's ``pseudo_samples``: 2), since a step needs one batch.
``tests/contract/test_paper_profiles.py`` runs the models whose case takes minutes here; a model whose case takes
longer (FDSL's ViT-L/14-336 at 518 px) runs only in the benchmark, whose table (time per stage, peak resident
memory) is ``docs/benchmarks/paper_profiles.md``::

    python -m tests.contract.paper_profiles [MODEL ...] [--output docs/benchmarks/paper_profiles.md]

Each model runs in its own process there, so its peak memory is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: Pool-size arguments shrunk to a couple of samples (a training step needs one batch of the pool).
SMALL_POOL = {"samples_per_shot": 2, "pseudo_samples": 2}
#: The smallest training batch each method allows (PCSNet trains on pairs).
MIN_BATCH = {"Pcsnet": 2}
#: Raw-output parity of the OpenVINO graph (the fast tier's tolerance).
RTOL = 1e-3


def paper_arguments(name: str) -> dict[str, Any]:
    """The paper profile's constructor arguments with random weights, one shot and the smallest batch and pool."""
    from anomalib_fewshot.config import model_init_args
    from anomalib_fewshot.models import REGISTRY

    spec = REGISTRY[name]
    arguments = model_init_args(spec.paper_profile, pre_trained=False, k_shot=1)
    arguments["batch_size"] = MIN_BATCH.get(name, 1)
    arguments |= {key: value for key, value in SMALL_POOL.items() if key in arguments}
    return arguments


def _images(n: int, size: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 8, 8, generator=generator)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def check(name: str) -> dict[str, Any]:
    """Build, train one step, forward, export and compare one model's paper profile; return times and parity."""
    import openvino as ov

    from anomalib_fewshot.components.lifecycle.pool import PoolBatch
    from anomalib_fewshot.models import REGISTRY

    times: dict[str, float] = {}
    start = time.perf_counter()
    torch.manual_seed(0)
    module = REGISTRY[name].model_class(**paper_arguments(name))
    size = int(module.hparams.image_size)
    input_size = int(module.hparams.get("resize_size") or size)
    shots = _images(1, size, seed=0)
    times["build_s"] = time.perf_counter() - start

    start = time.perf_counter()
    plan = module.prepare_fit(list(shots))
    output = module.training_step(PoolBatch(indices=torch.arange(plan.batch_size) % plan.pool_size), 0)
    loss = output["loss"]
    loss.backward()
    gradients = [p.grad for p in module.parameters() if p.requires_grad and p.grad is not None]
    times["train_step_s"] = time.perf_counter() - start

    start = time.perf_counter()
    module.finish_fit()
    module.release_fit()
    module.post_processor = None  # raw outputs
    module.eval()
    images = _images(2, input_size, seed=3)
    names = ["pred_score", "anomaly_map"]
    with torch.no_grad():
        expected = module(images)
    times["finish_forward_s"] = time.perf_counter() - start

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        torch.onnx.export(module, (images,), str(path), dynamo=True, optimize=False, opset_version=18)
        times["export_s"] = time.perf_counter() - start
        start = time.perf_counter()
        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        result = compiled(images.numpy())
        times["openvino_s"] = time.perf_counter() - start
    outputs = dict(zip(names, [np.asarray(value) for value in result.values()], strict=False))
    worst = {}
    for key in names:
        wanted = getattr(expected, key).numpy()
        got = outputs[key].reshape(wanted.shape)
        worst[key] = float(np.abs(got - wanted).max() / max(float(np.abs(wanted).max()), 1e-12))
    return {
        "model": name,
        "profile": REGISTRY[name].paper_profile,
        "backbone": module.hparams.backbone,
        "image_size": size,
        "input_size": input_size,
        "loss": float(loss),
        "finite_loss": bool(torch.isfinite(loss)),
        "gradients": len(gradients),
        "finite_gradients": all(bool(torch.isfinite(g).all()) for g in gradients),
        "finite_outputs": bool(
            torch.isfinite(expected.pred_score).all() and torch.isfinite(expected.anomaly_map).all()
        ),
        "parity": worst,
        "parity_ok": all(value <= RTOL for value in worst.values()),
        **{key: round(value, 1) for key, value in times.items()},
    }


def _child(name: str) -> None:
    row = check(name)
    row["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2)  # KiB -> GiB
    print("RESULT " + json.dumps(row), flush=True)


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of :func:`check` rows (with peak memory)."""
    lines = [
        "| model | profile, backbone | image (input) | build s | prepare_fit + 1 step s | finish_fit + forward s "
        "| ONNX export s | OpenVINO compile + run s | raw parity (max rel. diff score / map) | peak RSS GiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        parity = f"{r['parity']['pred_score']:.1e} / {r['parity']['anomaly_map']:.1e}"
        lines.append(
            f"| {r['model']} | {r['profile']}, {r['backbone']} | {r['image_size']} ({r['input_size']}) "
            f"| {r['build_s']} | {r['train_step_s']} | {r['finish_forward_s']} | {r['export_s']} | {r['openvino_s']} "
            f"| {parity} | {r['peak_rss_gb']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run :func:`check` for each model in its own process and print (or write) the table."""
    from anomalib_fewshot.benchmark.machine import machine_description
    from anomalib_fewshot.models import REGISTRY

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=list(REGISTRY))
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child)
        return 0
    rows = []
    for name in args.models:
        start = time.perf_counter()
        command = [sys.executable, "-m", "tests.contract.paper_profiles", "--child", name]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        found = [line[7:] for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode or not found:
            print(f"{name}: failed\n{done.stderr[-3000:]}", file=sys.stderr)
            return 1
        row = json.loads(found[0])
        row["total_s"] = round(time.perf_counter() - start, 1)
        rows.append(row)
        print(f"{name}: {row}", flush=True)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = table(rows) + "\n" + "\n".join(f"- {r['model']}: {r['total_s']} s for the whole process" for r in rows)
    command = f"python -m tests.contract.paper_profiles {' '.join(args.models)}"
    header = f"measured {stamp} on {machine_description()}, CPU otherwise idle; command: `{command}`\n\n"
    print(header + text)
    if args.output:
        args.output.write_text(header + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
