"""Measure a model's cost per training step and per test image for candidate profiles (chooses the lite profiles).

Runs on random images with random weights (cost does not depend on the weights), so it needs no data::

    python -m anomalib_fewshot.benchmark.cost pcsnet [--profiles paper lite_g48_c128 ...] [--threads N]
    python -m anomalib_fewshot.benchmark.cost ed [--profiles paper lite_d64_h4_l3 ...]
    python -m anomalib_fewshot.benchmark.cost fdsl [--profiles lite_lfe_off lite_lfe_s4 ...]

Prints a Markdown table: trainable parameters, eager ms per training step (forward and backward of the model's
own objective, as its lightning module runs it) and eager ms per test image (batch 1), each the median of
``--repeats`` after one warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import torch

from anomalib_fewshot.benchmark.machine import cpu_name

PCSNET_LITE: dict[str, Any] = {
    "backbone": "tf_efficientnet_lite0",
    "layers": ["blocks.1", "blocks.2", "blocks.4"],
    "pre_trained": False,
}
ED_LITE: dict[str, Any] = {
    "backbone": "tf_efficientnet_lite0",
    "layers": ["blocks.2", "blocks.4"],
    "pre_trained": False,
}


FDSL_LITE: dict[str, Any] = {
    "backbone": "tf_efficientnet_lite0",
    "layers": ["blocks.2", "blocks.4", "blocks.6"],
    "pre_trained": False,
    "image_size": 256,
    "window_size": 12,
}


def _pcsnet(grid: int, nearest: int, cas: int, bins: list[int]) -> dict[str, Any]:
    return {**PCSNET_LITE, "grid_size": grid, "num_nearest": nearest, "guide_channels": 88, "cas_dim": cas,
            "pyramid_bins": bins}  # fmt: skip


def _ed(d: int, heads: int, layers: int, **extra: Any) -> dict[str, Any]:
    return {**ED_LITE, "d_models": [d, 2 * d], "num_heads": heads, "num_layers": layers, **extra}


PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "pcsnet": {
        "paper": {"pre_trained": False},
        "lite_g32_c96": _pcsnet(32, 50, 96, [30, 15, 8, 4]),
        "lite_g32_c176": _pcsnet(32, 50, 176, [30, 15, 8, 4]),
        "lite_g48_c128": _pcsnet(48, 112, 128, [45, 23, 11, 6]),
        "lite_g64_c128": _pcsnet(64, 200, 128, [60, 30, 15, 8]),
    },
    "ed": {
        "paper": {"pre_trained": False},
        "lite_d64_h8_l3": _ed(64, 8, 3),
        "lite_d64_h4_l3": _ed(64, 4, 3),
        "lite_d64_h2_l2": _ed(64, 2, 2),
        "lite_d64_h1_l1": _ed(64, 1, 1),
        "lite_d128_h4_l3": _ed(128, 4, 3),
        "lite_d64_h4_l3_192px": _ed(64, 4, 3, image_size=192),
    },
    "fdsl": {  # k = 1; the training step is the pseudo-anomaly head's (batch 8)
        "paper_lfe_off": {"pre_trained": False, "lfe": False},
        "lite_lfe_off": {**FDSL_LITE, "lfe": False},
        "lite_lfe_s4": {**FDSL_LITE, "window_stride": 4},
        "lite_lfe_s2": {**FDSL_LITE, "window_stride": 2},
    },
}


@dataclass
class Workload:
    """What one profile measures: its trainable parameters, a training step and one test-image forward."""

    params: list[torch.nn.Parameter]
    step: Callable[[], None]
    infer: Callable[[], None]


def _pcsnet_workload(config: dict[str, Any]) -> Workload:
    from anomalib_fewshot.models.pcsnet.loss import PcsnetLoss
    from anomalib_fewshot.models.pcsnet.torch_model import PcsnetModel

    model = PcsnetModel(**config)
    size = model.image_size
    images = torch.rand(4, 3, size, size)
    with torch.no_grad():
        model.set_prototypes(model.describe(images[:2]))
    loss_fn = PcsnetLoss()
    params = [p for p in model.parameters() if p.requires_grad]
    masks = torch.zeros(2, 1, size, size)
    masks[:, :, size // 4 : size // 2, size // 4 : size // 2] = 1

    def step() -> None:  # 2 normal + 2 pseudo-anomalous images, all four PCSNet terms
        model.train()
        descriptors = model.describe(images)
        distances = model.distances(descriptors)
        nearest = model.nearest(distances, max(model.num_nearest, 3))
        grid_masks = torch.nn.functional.interpolate(masks, size=(model.grid_size,) * 2, mode="area").flatten(1)
        terms = {
            "nfc": loss_fn.compactness(nearest[:2], model.radius),
            "afs": loss_fn.separation(nearest[2:], distances[2:], grid_masks, model.radius),
            "pdc": loss_fn.disparity(nearest[1:3], torch.tensor([0.0, 1.0])),
            "seg": loss_fn.segmentation(model.segment(descriptors[1:3], nearest[1:3], (size, size)), masks),
        }
        loss_fn.weighted(terms).backward()

    def infer() -> None:
        model.eval()
        with torch.no_grad():
            model(images[:1])

    return Workload(params, step, infer)


def _ed_workload(config: dict[str, Any]) -> Workload:
    from anomalib_fewshot.models.ed.loss import EdLoss
    from anomalib_fewshot.models.ed.torch_model import EdModel

    model = EdModel(**config)
    size = config.get("image_size", 256)
    images = torch.rand(1, 3, size, size)
    tokens = model.tokens(images)  # training runs on cached tokens (batch 1, as the reference code)
    model.set_references(tokens)
    loss_fn = EdLoss()
    params = list(model.levels.parameters())

    def step() -> None:  # both objectives of both levels, one backward
        model.train()
        outputs = model.reconstruct(tokens)
        total = sum(loss_fn(t, r, maps)["total"] for t, (r, maps) in zip(tokens, outputs, strict=True))
        total.backward()

    def infer() -> None:
        model.eval()
        with torch.no_grad():
            model(images)

    return Workload(params, step, infer)


def _fdsl_workload(config: dict[str, Any]) -> Workload:
    from anomalib_fewshot.models.fdsl.head import head_loss
    from anomalib_fewshot.models.fdsl.loss import FdslLoss
    from anomalib_fewshot.models.fdsl.torch_model import FdslModel

    model = FdslModel(**config)
    size = model.image_size
    with torch.no_grad():
        model.set_banks(torch.rand(1, 3, size, size))
    images = torch.rand(8, 3, size, size)
    masks = torch.zeros(8, size, size)
    masks[:, size // 4 : size // 2, size // 4 : size // 2] = 1
    loss_fn = FdslLoss()
    params = [p for p in [*model.heads.parameters(), *model.nam.parameters()] if p.requires_grad]

    def step() -> None:  # one pseudo-anomaly head step (batch 8): backbone, matching, heads, NAM, 2 maps x levels
        model.train()
        head_loss(model, loss_fn, images, masks, [model.banks()] * len(images)).backward()

    def infer() -> None:
        model.eval()
        with torch.no_grad():
            model(images[:1])

    return Workload(params, step, infer)


WORKLOADS: dict[str, Callable[[dict[str, Any]], Workload]] = {
    "pcsnet": _pcsnet_workload,
    "ed": _ed_workload,
    "fdsl": _fdsl_workload,
}


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


def profile(model: str, name: str, repeats: int = 5) -> dict[str, Any]:
    """Cost of one profile: trainable parameters (M), ms per training step and per test image (eager, CPU)."""
    torch.manual_seed(0)
    workload = WORKLOADS[model](PROFILES[model][name])

    def step() -> None:
        workload.step()
        for param in workload.params:
            param.grad = None

    return {
        "profile": name,
        "params_M": sum(p.numel() for p in workload.params if p.requires_grad) / 1e6,
        "step_ms": median_ms(step, repeats),
        "infer_ms": median_ms(workload.infer, repeats),
    }


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
