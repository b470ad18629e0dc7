"""Measure PCSNet's cost per training step and per test image for candidate profiles (chooses the lite profile).

Runs on random images with random weights (cost does not depend on the weights), so it needs no data::

    python -m anomalib_fewshot.benchmark.pcsnet_profile [--profiles paper lite ...] [--threads N]

Prints a Markdown table: parameters, eager ms per training step (``batch_size`` normal + pseudo-anomalous images,
forward and backward) and eager ms per test image (batch 1, median of repeats after warm-up).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from datetime import UTC, datetime
from typing import Any

import torch

LITE_BASE: dict[str, Any] = {
    "backbone": "tf_efficientnet_lite0",
    "layers": ["blocks.1", "blocks.2", "blocks.4"],
    "pre_trained": False,
    "resize_size": None,
}

PROFILES: dict[str, dict[str, Any]] = {
    "paper": {"pre_trained": False},
    "lite_g32_c96": {
        **LITE_BASE,
        "grid_size": 32,
        "num_nearest": 50,
        "guide_channels": 88,
        "cas_dim": 96,
        "pyramid_bins": [30, 15, 8, 4],
    },
    "lite_g32_c176": {
        **LITE_BASE,
        "grid_size": 32,
        "num_nearest": 50,
        "guide_channels": 88,
        "cas_dim": 176,
        "pyramid_bins": [30, 15, 8, 4],
    },
    "lite_g48_c128": {
        **LITE_BASE,
        "grid_size": 48,
        "num_nearest": 112,
        "guide_channels": 88,
        "cas_dim": 128,
        "pyramid_bins": [45, 23, 11, 6],
    },
    "lite_g64_c128": {
        **LITE_BASE,
        "grid_size": 64,
        "num_nearest": 200,
        "guide_channels": 88,
        "cas_dim": 128,
        "pyramid_bins": [60, 30, 15, 8],
    },
}


def _median_ms(fn: Any, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def profile(name: str, repeats: int = 5) -> dict[str, Any]:
    """Cost of one profile: parameters, ms per training step and per test image (eager, CPU)."""
    from anomalib_fewshot.models.pcsnet.loss import PcsnetLoss
    from anomalib_fewshot.models.pcsnet.torch_model import PcsnetModel

    config = {k: v for k, v in PROFILES[name].items() if k != "resize_size"}
    torch.manual_seed(0)
    model = PcsnetModel(**config)
    size = model.image_size
    images = torch.rand(4, 3, size, size)
    with torch.no_grad():
        model.set_prototypes(model.describe(images[:2]))
    loss_fn = PcsnetLoss()
    params = [p for p in model.parameters() if p.requires_grad]
    masks = torch.zeros(2, 1, size, size)
    masks[:, :, size // 4 : size // 2, size // 4 : size // 2] = 1

    def step() -> None:
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
        for p in params:
            p.grad = None

    def infer() -> None:
        model.eval()
        with torch.no_grad():
            model(images[:1])

    return {
        "profile": name,
        "params_M": sum(p.numel() for p in params) / 1e6,
        "step_ms": _median_ms(step, repeats),
        "infer_ms": _median_ms(infer, repeats),
    }


def main(argv: list[str] | None = None) -> None:
    """Print the profile table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", nargs="+", default=list(PROFILES), choices=list(PROFILES))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"# PCSNet cost profiles — {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n"
    )
    print("| profile | trainable params (M) | ms / training step (2 normal + 2 anomalous) | ms / test image (eager) |")
    print("|---|---:|---:|---:|")
    for name in args.profiles:
        row = profile(name, args.repeats)
        print(f"| {name} | {row['params_M']:.2f} | {row['step_ms']:.0f} | {row['infer_ms']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
