"""The branch-diagnosis script runs on a checkpoint of every plugin model and prints one row per branch."""

from __future__ import annotations

from pathlib import Path

import pytest
from anomalib.data import MVTecAD
from anomalib.engine import Engine

import anomalib_fewshot.models as plugin_models
from anomalib_fewshot.benchmark import branches
from tests.helpers import TINY_CONFIGS

EXPECTED_ROWS = {
    "Ed": ["rec", "inter", "rec_x_inter", "rec_level0", "rec_x_inter_level1"],
    "Dfd": ["gaussian", "perlin", "gaussian/low", "perlin/high"],
    "Pcsnet": ["cas", "pfa_3nn_mean", "pfa_1nn"],
    "Fdsl": ["fd_residual_norm", "head_global", "head_global_nam", "lfe_windows", "model"],
}


@pytest.mark.parametrize("name", sorted(branches.BRANCHES))
def test_branch_table(tmp_path: Path, tiny_data_root: Path, name: str, capsys: pytest.CaptureFixture):
    model = getattr(plugin_models, name)(**TINY_CONFIGS[name])
    datamodule = MVTecAD(root=tiny_data_root, category="tiny", num_workers=0)
    engine = Engine(default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    engine.fit(model, datamodule=datamodule)
    ckpt = next(tmp_path.rglob("model.ckpt"))
    branches.main([name, str(ckpt), str(tiny_data_root), "tiny"])
    out = capsys.readouterr().out
    for row in EXPECTED_ROWS[name]:
        line = next(line for line in out.splitlines() if line.startswith(f"| {row} |"))
        pixel, image = (float(v) for v in line.strip("| ").split("|")[1:3])
        assert 0.0 <= pixel <= 1.0
        assert 0.0 <= image <= 1.0


def test_every_plugin_model_has_branches():
    assert set(branches.BRANCHES) == set(plugin_models.__all__)
