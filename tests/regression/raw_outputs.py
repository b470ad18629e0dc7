"""Record, or compare against a recording, the *raw* outputs of every plugin model after a seeded tiny fit.

A refactoring that must not change behaviour is checked with it: record at the commit before the change,
compare after it::

    python -m tests.regression.raw_outputs record [tests/regression/fixtures/raw_outputs.pt]
    python -m tests.regression.raw_outputs compare [tests/regression/fixtures/raw_outputs.pt] [--rtol 1e-5]

The committed fixture (``tests/regression/fixtures/raw_outputs.pt``, its commit and machine in
``fixtures/README.md``) is the recording of the last behaviour-preserving refactor; re-record it at the commit
before the next one. Outputs depend on the CPU's kernels: compare on the machine that recorded.

Each case fits one tiny configuration (``tests.helpers.fit_tiny``, seeded, generated data) and stores
``model.model(pre_processor(images))`` (score and map before any post-processing) on fixed random images and on
one good and one defective generated test image (as small as the check needs).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

#: The committed recording.
FIXTURE = Path(__file__).parent / "fixtures" / "raw_outputs.pt"

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
    test = data_root / "tiny" / "test"
    files = [
        sorted((test / "good").glob("*.png"))[0],
        sorted(p for p in test.rglob("*.png") if p.parent.name != "good")[0],
    ]
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


def load_recording(path: Path) -> dict[str, Any]:
    """``{"machine": cpu_name, "outputs": {case: {key: tensor}}}`` (recordings before 2026-12-06: the outputs alone)."""
    recorded = torch.load(path, weights_only=True)
    return recorded if "outputs" in recorded else {"machine": "unknown", "outputs": recorded}


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
    parser.add_argument("path", type=Path, nargs="?", default=FIXTURE)
    parser.add_argument("--rtol", type=float, default=1e-5)
    parser.add_argument("--cases", nargs="+", default=None)
    args = parser.parse_args(argv)
    if args.action == "record":
        from anomalib_fewshot.benchmark.machine import cpu_name

        outputs = raw_outputs(args.cases)
        args.path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"machine": cpu_name(), "outputs": outputs}, args.path)
        return 0
    recorded = load_recording(args.path)
    print(f"recorded on {recorded['machine']}")
    return 1 if compare(recorded["outputs"], raw_outputs(args.cases), args.rtol) else 0


if __name__ == "__main__":
    sys.exit(main())
