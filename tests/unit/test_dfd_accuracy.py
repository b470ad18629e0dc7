"""Accuracy floor: DFD lite with the offline EfficientNet-Lite0 weights separates the demo defects (1-shot)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from anomalib.data import MVTecAD
from anomalib.engine import Engine

from anomalib_fewshot.config import model_init_args
from anomalib_fewshot.data.demo import make_demo_dataset
from anomalib_fewshot.models import Dfd

pytestmark = pytest.mark.slow


def test_dfd_lite_demo_image_auroc(tmp_path: Path):
    make_demo_dataset(tmp_path / "data", "plate")
    torch.manual_seed(0)
    # The lite profile with a shorter schedule (the full 80 x 80 schedule is a benchmark, not a test).
    model = Dfd(**model_init_args("dfd_lite", k_shot=1, samples_per_shot=ACCURACY_SAMPLES, epochs=ACCURACY_EPOCHS))
    datamodule = MVTecAD(root=tmp_path / "data", category="plate", num_workers=0, eval_batch_size=8)
    engine = Engine(default_root_dir=tmp_path / "results", logger=False, enable_progress_bar=False)
    engine.fit(model, datamodule=datamodule)
    metrics = engine.test(model, datamodule=datamodule)[0]
    assert metrics["image_AUROC"] >= 0.9, metrics


ACCURACY_SAMPLES = 40
ACCURACY_EPOCHS = 20
