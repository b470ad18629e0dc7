"""Determinism: the same seeds give the same shots and scores on CPU; another few-shot seed gives other shots.

Another training seed (``train_seed``) gives the same shots and another fit.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from anomalib_fewshot.components.lifecycle.fewshot import select_shots
from tests.helpers import fit_tiny, raw_outputs
from tests.reliability.conftest import FittedModel

pytestmark = pytest.mark.slow


def test_same_seed_same_shots_and_scores(fitted: FittedModel, tiny_data_root: Path, tmp_path: Path):
    rerun, _ = fit_tiny(fitted.name, tiny_data_root, tmp_path)
    assert rerun.few_shot_record["shots"] == fitted.model.few_shot_record["shots"]
    images = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    a, b = raw_outputs(fitted.model, images), raw_outputs(rerun, images)
    assert float(a.anomaly_map.std()) > 0  # a constant map could not show a difference
    torch.testing.assert_close(a.pred_score, b.pred_score, rtol=1e-6, atol=0)
    torch.testing.assert_close(a.anomaly_map, b.anomaly_map, rtol=1e-6, atol=0)


def test_other_seed_other_shots(fitted: FittedModel):
    model = type(fitted.model)(**{**dict(fitted.model.hparams), "few_shot_seed": 1})
    datamodule = fitted.engine.trainer.datamodule
    trainer = type("TrainerStub", (), {"datamodule": datamodule, "is_global_zero": False})()
    shots = model.apply_few_shot(trainer)
    assert shots != fitted.model.few_shot_record["shots"]
    paths = datamodule.train_data.samples["image_path"].tolist()
    assert shots == select_shots(paths, len(shots), 1)


def test_another_training_seed_keeps_the_shots_and_changes_the_fit(
    fitted: FittedModel, tiny_data_root: Path, tmp_path: Path
):
    assert fitted.model.train_seed == fitted.model.few_shot_seed == 0  # the default: the few-shot seed
    images = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    same, _ = fit_tiny(fitted.name, tiny_data_root, tmp_path / "same", train_seed=0)
    torch.testing.assert_close(raw_outputs(same, images).anomaly_map, raw_outputs(fitted.model, images).anomaly_map)
    other, _ = fit_tiny(fitted.name, tiny_data_root, tmp_path / "other", train_seed=1)
    assert other.train_seed == 1 and other.hparams["train_seed"] == 1
    assert other.few_shot_record["shots"] == fitted.model.few_shot_record["shots"]
    a, b = raw_outputs(fitted.model, images).anomaly_map, raw_outputs(other, images).anomaly_map
    assert not torch.allclose(a, b, rtol=1e-4, atol=1e-6), "the training seed changed nothing in the fit"
