"""Record, or compare against a recording, the *raw* outputs of every plugin model after a seeded tiny fit.

A refactoring that must not change behaviour is checked with it: record at the commit before the change,
compare after it::

    python -m tests.regression.raw_outputs record docs/measurements/raw_outputs_<commit>.pt
    python -m tests.regression.raw_outputs compare docs/measurements/raw_outputs_<commit>.pt [--rtol 1e-5]

Each case fits one tiny configuration (``tests.helpers.fit_tiny``, seeded, generated data) and stores
``model.model(pre_processor(images))`` (score and map before any post-processing) on fixed random images and on
the generated test images.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

#: (case name, model name, overrides of the tiny configuration)
CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("Dfd", "Dfd", {}),
    ("Dfd-k1", "Dfd", {"k_shot": 1}),
    ("Ed", "Ed", {}),
    ("Ed-full", "Ed", {"k_shot": None}),
    ("Ed-rec", "Ed", {"anomaly_map": "rec", "cache_dtype": "float32"}),
    ("Fdsl", "Fdsl", {}),
    ("Fdsl-lfe-off", "Fdsl", {"lfe": False}),
    ("Fdsl-window-index", "Fdsl", {"window_index": True}),
    (
        "Fdsl-cnn",
        "Fdsl",
        {
            "backbone": "tf_efficientnet_lite0",
            "layers": ["blocks.2", "blocks.4", "blocks.6"],
            "vision_cfg": None,
            "window_size": 4,
            "window_stride": 2,
        },
    ),
    ("Pcsnet", "Pcsnet", {}),
    ("Pcsnet-k1", "Pcsnet", {"k_shot": 1}),
    ("Pcsnet-cas", "Pcsnet", {"anomaly_map": "cas"}),
]


def _inputs(data_root: Path) -> torch.Tensor:
    from torchvision.io import decode_image

    generator = torch.Generator().manual_seed(0)
    noise = torch.rand(2, 3, 64, 64, generator=generator)
    files = sorted((data_root / "tiny" / "test").rglob("*.png"))
    real = torch.stack([decode_image(str(f)).float()[:3] / 255 for f in files])
    return torch.cat([noise, real])


def raw_outputs(names: list[str] | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """Fit every case and return its raw outputs."""
    from tests.helpers import fit_tiny, make_tiny_dataset

    torch.set_num_threads(2)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        data_root = Path(tmp) / "data"
        make_tiny_dataset(data_root)
        images = _inputs(data_root)
        for case, name, overrides in CASES:
            if names and case not in names:
                continue
            model, _ = fit_tiny(name, data_root, Path(tmp) / case, **overrides)
            model.eval()
            with torch.no_grad():
                result = model.model(model.pre_processor(images))
            out[case] = {"pred_score": result.pred_score.detach().clone(), "anomaly_map": result.anomaly_map.clone()}
            print(f"{case}: score {result.pred_score.flatten()[:3].tolist()}", flush=True)
    return out


def compare(recorded: dict[str, dict[str, torch.Tensor]], now: dict[str, dict[str, torch.Tensor]], rtol: float) -> int:
    """Print one line per case; return the number of cases that differ."""
    failures = 0
    for case, outputs in recorded.items():
        if case not in now:
            continue
        for key, expected in outputs.items():
            actual = now[case][key]
            scale = expected.abs().max().clamp_min(1e-12)
            worst = float(((actual - expected).abs() / scale).max())
            ok = actual.shape == expected.shape and torch.allclose(actual, expected, rtol=rtol, atol=rtol * scale)
            failures += not ok
            print(f"{'ok  ' if ok else 'DIFF'} {case} {key}: max |diff| / max |value| = {worst:.2e}")
    return failures


def main(argv: list[str] | None = None) -> int:
    """``record PATH`` or ``compare PATH``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["record", "compare"])
    parser.add_argument("path", type=Path)
    parser.add_argument("--rtol", type=float, default=1e-5)
    parser.add_argument("--cases", nargs="+", default=None)
    args = parser.parse_args(argv)
    if args.action == "record":
        outputs = raw_outputs(args.cases)
        args.path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(outputs, args.path)
        return 0
    recorded = torch.load(args.path, weights_only=True)
    return 1 if compare(recorded, raw_outputs(args.cases), args.rtol) else 0


if __name__ == "__main__":
    sys.exit(main())
