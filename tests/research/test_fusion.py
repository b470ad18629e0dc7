"""The fusion screen (PCSNet, DFD) on development checkpoints: it reproduces the model's map and score."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from anomalib_fewshot.benchmark import runner, store
from anomalib_fewshot.components.anomalies import normal_views
from anomalib_fewshot.errors import InvalidArgumentError
from research import fusion
from research.branch_pairs import checkpoint_of
from tests.benchmark.test_dev_grid import _grid
from tests.helpers import TINY_CONFIGS

pytestmark = pytest.mark.slow  # fits through Engine


@pytest.fixture(autouse=True)
def _no_plots(monkeypatch):
    monkeypatch.setattr("anomalib_fewshot.benchmark.plots.write_plots", lambda rows, output: [])


def test_normal_views_are_seeded_bounded_and_the_identity_without_change():
    images = list(torch.rand(2, 3, 32, 32))
    views = normal_views(images, 3, max_shift=2.0, jitter=0.1, seed=0)
    assert views.shape == (6, 3, 32, 32)
    assert 0.0 <= float(views.min()) and float(views.max()) <= 1.0
    assert torch.equal(views, normal_views(images, 3, max_shift=2.0, jitter=0.1, seed=0))
    assert not torch.allclose(views[0], images[0], atol=1e-3)
    assert not torch.allclose(views, normal_views(images, 3, max_shift=2.0, jitter=0.1, seed=1))
    unchanged = normal_views(images, 2, max_shift=0.0, jitter=0.0)
    assert torch.allclose(unchanged[:2], images[0].expand(2, -1, -1, -1), atol=1e-6)
    # the borders are reflected: a flat image stays flat after a shift (zero padding would leave a black strip)
    flat = torch.full((3, 32, 32), 0.5)
    assert torch.allclose(normal_views([flat], 4, max_shift=3.0, jitter=0.0), torch.full((4, 3, 32, 32), 0.5))
    with pytest.raises(InvalidArgumentError, match="normal_views"):
        normal_views(images, 0, max_shift=1.0, jitter=0.1)


def test_mixing_weight_is_the_share_of_the_prototype_branch():
    reference = (0.0, 2.0, 0.0, 4.0)
    assert fusion.mixing_weight(reference, reference) == pytest.approx(0.5)
    # the shots' tiny prototype spread (σ_p 0.04 against the views' 4.0) puts almost all the weight on it
    assert fusion.mixing_weight((0.0, 2.0, 0.0, 0.04), reference) == pytest.approx(100 / 101)
    maps = {"cas": torch.tensor([1.0, 3.0]), "prototype": torch.tensor([4.0, 8.0])}
    branches = ("cas", "prototype")
    assert torch.allclose(fusion.mix(maps, 0.0, reference, branches), torch.tensor([0.5, 1.5]))
    assert torch.allclose(fusion.mix(maps, 1.0, reference, branches), torch.tensor([1.0, 2.0]))


def test_fusion_screen_reproduces_the_model_map_on_a_development_checkpoint(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    quick = {"epochs": 1, "image_size": 64, "resize_size": None, "grid_size": 16, "num_nearest": 8,
             "pyramid_bins": [15, 8, 4, 2], "anomaly_map": "cas+prototype"}  # fmt: skip
    path = _grid(tmp_path, [{"model": "Pcsnet", "variant": "q", "profile": "pcsnet_lite", "overrides": quick}])
    runner.run_grid(path)
    row = store.read_rows(tmp_path / "out" / "results.csv")[0]
    assert row["status"] == "ok", row
    output = tmp_path / "fusion"
    assert fusion.main(["--jobs", str(tmp_path / "jobs"), "--variant", "q", "--output", str(output),
                        "--views", "2", "--shifts", "1", "--weights", "0", "0.5", "1"]) == 0  # fmt: skip
    job = f"Pcsnet_q_{row['dataset']}_1_0_dev"
    sources = [r for r in store.read_rows(output / "sources.csv") if r["job"] == job]
    sweep = [r for r in store.read_rows(output / "sweep.csv") if r["job"] == job]
    assert (output / "sweep.png").is_file()
    shots = next(r for r in sources if r["source"] == "shots")
    views = next(r for r in sources if r["source"] == "views-1")
    # the shots' statistics are the model's: the mix is its own map (up to scale and offset)
    assert float(shots["model_correlation"]) > 0.9999, shots
    assert float(views["weight"]) == pytest.approx(0.5)
    assert float(shots["image_auroc"]) == pytest.approx(float(row["image_auroc"]), abs=1e-4)
    assert [float(r["weight"]) for r in sweep] == [0.0, 0.5, 1.0]
    assert float(next(r for r in sweep if float(r["weight"]) == 0.5)["image_auroc"]) == pytest.approx(
        float(views["image_auroc"]), abs=1e-4
    )

    # a checkpoint moved beside a data root that is not a development split is refused
    ckpt = checkpoint_of(tmp_path / "jobs" / job)
    state = torch.load(ckpt, weights_only=False)
    data = tmp_path / "data" / row["dataset"]
    state["few_shot"]["shots"] = [str(p) for p in sorted((data / "plate" / "train" / "good").glob("*.png"))[:1]]
    moved = tmp_path / "moved.ckpt"
    torch.save(state, moved)
    with pytest.raises(InvalidArgumentError, match="not a development split"):
        fusion.screen_checkpoint(moved, [1.0], 2, [0.5])
    assert json.loads(json.dumps(sources))  # rows are plain values


def test_dfd_statistics_are_its_normaliser_and_the_screen_reproduces_its_map_and_score(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    quick = {**TINY_CONFIGS["Dfd"], "k_shot": 1}
    path = _grid(tmp_path, [{"model": "Dfd", "variant": "q", "profile": "dfd_lite", "overrides": quick}])
    runner.run_grid(path)
    row = store.read_rows(tmp_path / "out" / "results.csv")[0]
    assert row["status"] == "ok", row
    output = tmp_path / "fusion"
    assert fusion.main(["--model", "Dfd", "--jobs", str(tmp_path / "jobs"), "--variant", "q", "--output",
                        str(output), "--views", "2", "--shifts", "1", "--weights", "0", "1"]) == 0  # fmt: skip
    job = f"Dfd_q_{row['dataset']}_1_0_dev"
    sources = {r["source"]: r for r in store.read_rows(output / "sources.csv") if r["job"] == job}
    assert set(sources) == {"pool", "views-1", "views-1-fit"}
    pool, fitted = sources["pool"], sources["views-1-fit"]
    # the pool statistics mix into the model's own map, and its score rule gives the runner's image AUROC
    assert float(pool["model_correlation"]) > 0.9999, pool
    assert float(pool["image_auroc"]) == pytest.approx(float(row["image_auroc"]), abs=1e-4)
    assert float(pool["pixel_auroc"]) == pytest.approx(float(row["pixel_auroc"]), abs=1e-4)
    # the views are other data than the training pool: the normaliser fitted on them differs from the stored one
    assert float(fitted["sigma_g"]) != pytest.approx(float(pool["sigma_g"]), rel=1e-3)
    assert float(sources["views-1"]["weight"]) == pytest.approx(0.5)
