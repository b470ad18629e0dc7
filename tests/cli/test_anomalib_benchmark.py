"""The shipped example configs for anomalib's own ``anomalib benchmark`` pipeline build and run our model."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from anomalib_fewshot.config import model_init_args
from anomalib_fewshot.models import Pcsnet
from tests.helpers import TINY_CONFIGS

EXAMPLES = Path(__file__).parents[2] / "examples" / "anomalib_benchmark"


def _example(name: str) -> dict:
    return yaml.safe_load((EXAMPLES / name).read_text())


def test_example_builds_the_lite_profile():
    args = _example("pcsnet_lite.yaml")["benchmark"]["model"]["init_args"]
    for k_shot in args["k_shot"]["grid"]:
        from_example = Pcsnet(**{**args, "k_shot": k_shot, "pre_trained": False})
        from_profile = Pcsnet(**model_init_args("pcsnet_lite", k_shot=k_shot, pre_trained=False))
        assert dict(from_example.hparams) == dict(from_profile.hparams)


def _run_benchmark(config: dict, root: Path, cwd: Path) -> list[dict[str, str]]:
    data = config["benchmark"]["data"]["init_args"]
    data.update({"root": str(root), "category": {"grid": ["tiny"]}, "eval_batch_size": 4})
    cwd.mkdir()
    (cwd / "benchmark.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    anomalib = str(Path(sys.executable).parent / "anomalib")
    result = subprocess.run([anomalib, "benchmark", "--config", "benchmark.yaml"], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=900, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr[-5000:]
    (table,) = cwd.glob("runs/benchmark/*/results.csv")  # anomalib logs a failed job and writes no table
    return list(csv.DictReader(table.open()))


@pytest.mark.slow
def test_stock_anomalib_benchmark_runs_the_examples(tmp_path: Path, tiny_data_root: Path):
    config = _example("pcsnet_lite.yaml")
    config["benchmark"]["model"]["init_args"].update(
        {**TINY_CONFIGS["Pcsnet"], "epochs": 1, "k_shot": {"grid": [1, 2]}}
    )
    rows = _run_benchmark(config, tiny_data_root, tmp_path / "pcsnet")
    assert [(row["model.class_path"], row["model.init_args.k_shot"]) for row in rows] == [
        ("Pcsnet", "1"),
        ("Pcsnet", "2"),
    ]
    assert all(0.0 <= float(row["image_AUROC"]) <= 1.0 for row in rows)
    config = _example("patchcore.yaml")  # offline: a random ResNet-18 instead of the downloaded WideResNet-50
    config["benchmark"]["model"]["init_args"] = {"backbone": "resnet18", "pre_trained": False, "layers": ["layer2"]}
    rows = _run_benchmark(config, tiny_data_root, tmp_path / "patchcore")
    assert [row["model.class_path"] for row in rows] == ["Patchcore"]
