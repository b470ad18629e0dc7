"""Learning curves: the callback scores the model every N epochs (and after the last) without disturbing the fit."""

from __future__ import annotations

from pathlib import Path

import pytest
from anomalib.data import MVTecAD
from anomalib.engine import Engine

from anomalib_fewshot.benchmark import store
from anomalib_fewshot.models import REGISTRY
from research.learning_curve import LearningCurve
from tests.helpers import TINY_CONFIGS

pytestmark = pytest.mark.slow  # fits through Engine


@pytest.mark.parametrize("name", ["Dfd", "Pcsnet"])
def test_the_curve_scores_every_n_epochs_and_the_last(name: str, tmp_path: Path, tiny_data_root: Path):
    model = REGISTRY[name].model_class(**{**TINY_CONFIGS[name], "epochs": 3})
    modes = {n: m.training for n, m in model.named_modules()}
    curve = LearningCurve(tiny_data_root, "tiny", tmp_path / "curve", every_n_epochs=2, batch_size=4)
    engine = Engine(default_root_dir=tmp_path / "run", logger=False, callbacks=[curve], enable_progress_bar=False)
    engine.fit(model, datamodule=MVTecAD(root=tiny_data_root, category="tiny", num_workers=0))
    rows = store.read_rows(tmp_path / "curve" / "curve.csv")
    assert [int(r["epoch"]) for r in rows] == [2, 3]
    assert int(rows[0]["global_step"]) < int(rows[1]["global_step"])
    for row in rows:
        for metric in ("image_auroc", "pixel_auroc", "aupro"):
            assert 0.0 <= float(row[metric]) <= 1.0
    assert (tmp_path / "curve" / "curve.png").stat().st_size > 1000
    # the frozen extractor was never switched to training mode by the evaluations
    assert not model.model.backbone.training
    assert modes["model.backbone"] is False


def test_the_period_must_be_positive(tmp_path: Path):
    with pytest.raises(ValueError, match="every_n_epochs"):
        LearningCurve(tmp_path, "c", tmp_path, every_n_epochs=0)
