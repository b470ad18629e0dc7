"""Measure a model's cost per training step and per test image for candidate profiles (chooses the lite profiles).

Runs on random images with random weights (cost does not depend on the weights), so it needs no data::

    python -m anomalib_fewshot.benchmark.cost pcsnet [--profiles paper lite_g48_c128 ...] [--threads N]
    python -m anomalib_fewshot.benchmark.cost ed [--profiles paper lite_d64_h4_l3 ...]
    python -m anomalib_fewshot.benchmark.cost fdsl [--profiles lite_lfe_off lite_lfe_s4 ...]

The models and their candidate profiles come from the registry (``ModelSpec.cost_profiles``, kept in each model's
folder); this module knows no model. Every profile drives the model's own Lightning module through its public fit
API: ``prepare_fit`` on ``ModelSpec.cost_shots`` random images (k = 2 for PCSNet, 1 for ED and FDSL) builds the
pool, banks, prototypes or references without a trainer; the training step is the module's ``training_step`` on
one pool batch (its real objective: PCSNet 2 normal + 2 pseudo-anomalous images and all four terms, ED both
objectives of both levels on cached tokens at batch 1, FDSL the pseudo-anomaly head at batch 8), forward and
backward; the test image is the torch model's eval forward at batch 1.

Prints a Markdown table: trainable parameters, eager ms per training step and eager ms per test image, each the
median of ``--repeats`` after one warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import torch

from anomalib_fewshot.benchmark.machine import cpu_name
from anomalib_fewshot.components.lifecycle.pool import PoolBatch
from anomalib_fewshot.components.lifecycle.spec import ModelSpec
from anomalib_fewshot.errors import InvalidArgumentError
from anomalib_fewshot.models import REGISTRY

#: Candidate profiles by lower-case model name (the command's ``model`` argument), from the registry.
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    spec.name.lower(): spec.cost_profiles for spec in REGISTRY.values() if spec.cost_profiles
}


@dataclass
class Workload:
    """What one profile measures: its trainable parameters, a training step and one test-image forward."""

    module: Any
    params: list[torch.nn.Parameter]
    step: Callable[[], None]
    infer: Callable[[], None]


def workload(spec: ModelSpec, config: Mapping[str, Any]) -> Workload:
    """The workload of ``spec``'s model built with ``config``: a fit prepared on ``spec.cost_shots`` random images."""
    module = spec.model_class(**{**config, "k_shot": spec.cost_shots})
    size = int(module.hparams["image_size"])
    images = [torch.rand(3, size, size) for _ in range(spec.cost_shots)]
    plan = module.prepare_fit(images)
    batch = PoolBatch(indices=torch.arange(plan.batch_size) % plan.pool_size)
    params = [p for p in module.parameters() if p.requires_grad]
    test_image = images[0][None]
    # Lightning's fit keeps each submodule's train/eval mode as the model set it (frozen backbones stay in eval)
    training_modes = [(submodule, submodule.training) for submodule in module.modules()]

    def step() -> None:
        for submodule, training in training_modes:
            submodule.training = training
        with warnings.catch_warnings():  # no trainer: self.log warns and does nothing
            warnings.filterwarnings("ignore", message=r".*self\.log\(\)")
            output = module.training_step(batch, 0)
        if output is None:
            msg = f"{spec.name} makes no training step with this profile (nothing to measure)"
            raise ValueError(msg)
        output["loss"].backward()

    def infer() -> None:
        module.model.eval()
        with torch.no_grad():
            module.model(test_image)

    return Workload(module, params, step, infer)


def model_spec(model: str) -> ModelSpec:
    """The registered spec of ``model`` (the class name in any case: ``pcsnet``, ``Pcsnet``)."""
    specs = {name.lower(): spec for name, spec in REGISTRY.items()}
    if model.lower() not in specs:
        msg = f"unknown model {model!r}; registered: {sorted(specs)}"
        raise InvalidArgumentError(msg)
    return specs[model.lower()]


def median_ms(fn: Callable[[], None], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn`` in milliseconds after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def measure(spec: ModelSpec, config: Mapping[str, Any], repeats: int = 5) -> dict[str, float]:
    """Cost of ``spec``'s model with ``config``: trainable parameters (M), ms per training step and per test image."""
    torch.manual_seed(0)
    work = workload(spec, config)

    def step() -> None:
        work.step()
        for param in work.params:
            param.grad = None

    return {
        "params_M": sum(p.numel() for p in work.params if p.requires_grad) / 1e6,
        "step_ms": median_ms(step, repeats),
        "infer_ms": median_ms(work.infer, repeats),
    }


def profile(model: str, name: str, repeats: int = 5) -> dict[str, Any]:
    """Cost of one of ``model``'s profiles (eager, CPU), as a table row."""
    spec = model_spec(model)
    return {"profile": name, **measure(spec, spec.cost_profiles[name], repeats)}


def main(argv: list[str] | None = None) -> None:
    """Print the profile table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=sorted(PROFILES))
    parser.add_argument("--profiles", nargs="+", default=None, help="profile names (default: all of the model's)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    names = args.profiles or list(PROFILES[args.model])
    unknown = sorted(set(names) - set(PROFILES[args.model]))
    if unknown:
        parser.error(f"unknown {args.model} profile(s) {unknown}; choose from {list(PROFILES[args.model])}")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"# {args.model} cost profiles — {cpu_name()}, {torch.get_num_threads()} "
        f"threads, torch {torch.__version__}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n"
    )
    print("| profile | trainable params (M) | ms / training step | ms / test image (eager) |")
    print("|---|---:|---:|---:|")
    for name in names:
        row = profile(args.model, name, args.repeats)
        print(f"| {name} | {row['params_M']:.2f} | {row['step_ms']:.0f} | {row['infer_ms']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
