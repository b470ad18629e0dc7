"""Accuracy floors (`ModelSpec.demo_accuracy`): the offline lite profiles separate the demo defects (1-shot)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from anomalib.data import MVTecAD
from anomalib.engine import Engine

from anomalib_fewshot.config import model_init_args
from anomalib_fewshot.data.demo import make_demo_dataset
from anomalib_fewshot.models import REGISTRY

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", list(REGISTRY))
def test_lite_profile_demo_accuracy(tmp_path: Path, name: str):
    spec = REGISTRY[name]
    floor = spec.demo_accuracy
    assert floor is not None, f"{name} has no demo accuracy floor (ModelSpec.demo_accuracy)"
    make_demo_dataset(tmp_path / "data", "plate")
    torch.manual_seed(0)
    model = spec.model_class(**model_init_args(spec.lite_profile, k_shot=1, **floor.overrides))
    datamodule = MVTecAD(root=tmp_path / "data", category="plate", num_workers=0, eval_batch_size=8)
    engine = Engine(default_root_dir=tmp_path / "results", logger=False, enable_progress_bar=False)
    engine.fit(model, datamodule=datamodule)
    metrics = engine.test(model, datamodule=datamodule)[0]
    assert metrics["image_AUROC"] >= floor.image_auroc, metrics
    if floor.pixel_auroc is not None:
        assert metrics["pixel_AUROC"] >= floor.pixel_auroc, metrics


def test_every_plugin_model_has_an_accuracy_floor():
    assert all(spec.demo_accuracy is not None for spec in REGISTRY.values())
