"""The branch-diagnosis script runs on a checkpoint of every plugin model and prints one row per branch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from anomalib.data import MVTecAD
from anomalib.engine import Engine

from anomalib_fewshot.benchmark import store
from anomalib_fewshot.models import REGISTRY
from research import branches, gallery
from tests.helpers import TINY_CONFIGS

#: Rows each model's table must contain (a model without an entry here must still print valid rows).
EXPECTED_ROWS = {
    "Ed": ["rec", "inter", "rec_x_inter", "rec_level0", "rec_x_inter_level1"],
    "Dfd": ["gaussian", "perlin", "gaussian/low", "perlin/high"],
    "Pcsnet": ["cas", "pfa_3nn_mean", "pfa_1nn"],
    "Fdsl": ["fd_residual_norm", "head_global", "head_global_nam", "lfe_windows", "model"],
}


def test_branch_metrics_follow_the_maps():
    """A map that marks the defects scores 1, its negation 0, a constant map 0.5 (image score: the map's max)."""
    masks = torch.zeros(6, 16, 16)
    masks[3:, 4:8, 4:8] = 1
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    noise = 0.1 * torch.rand(6, 16, 16, generator=torch.Generator().manual_seed(0))
    maps = {"marks": masks + noise, "negated": 1 - masks + noise, "constant": torch.zeros(6, 16, 16)}
    metrics = branches.branch_metrics(maps, labels, masks)
    assert list(metrics) == ["marks", "negated", "constant"]
    assert metrics["marks"]["image_auroc"] == metrics["marks"]["pixel_auroc"] == 1.0
    assert metrics["marks"]["aupro"] == pytest.approx(1.0, abs=1e-3)
    assert metrics["negated"]["pixel_auroc"] == 0.0
    assert metrics["negated"]["aupro"] == pytest.approx(0.0, abs=1e-3)
    assert metrics["constant"]["image_auroc"] == metrics["constant"]["pixel_auroc"] == 0.5


@pytest.mark.slow  # fits through Engine
@pytest.mark.parametrize("name", list(branches.BRANCHES))
def test_branch_table(tmp_path: Path, tiny_data_root: Path, name: str, capsys: pytest.CaptureFixture):
    model = REGISTRY[name].model_class(**TINY_CONFIGS[name])
    datamodule = MVTecAD(root=tiny_data_root, category="tiny", num_workers=0)
    engine = Engine(default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    engine.fit(model, datamodule=datamodule)
    ckpt = next(tmp_path.rglob("model.ckpt"))
    csv_path = tmp_path / "branches.csv"
    returned = branches.main([name, str(ckpt), str(tiny_data_root), "tiny", "--csv", str(csv_path)])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| branch |")]
    assert rows
    for row in EXPECTED_ROWS.get(name, []):
        assert any(line.startswith(f"| {row} |") for line in rows), out
    written = store.read_rows(csv_path)
    for line, row in zip(rows, written, strict=True):  # the printed table is the written one (what metrics mean:
        printed = [float(v) for v in line.strip("| ").split("|")[1:4]]  # test_branch_metrics_follow_the_maps)
        assert printed == [round(float(row[key]), 3) for key in ("pixel_auroc", "image_auroc", "aupro")], line
    assert (
        [r["branch"] for r in written]
        == [r["branch"] for r in returned]
        == [line.split("|")[1].strip() for line in rows]
    )
    assert {r["split"] for r in written} == {"test"}
    assert {r["k_shot"] for r in written} == {str(TINY_CONFIGS[name]["k_shot"])}
    assert all(set(r) >= {"image_auroc", "pixel_auroc", "aupro", "image_f1max", "pixel_f1max"} for r in written)

    # the galleries of the same checkpoint: the training pool, and one overlay column per branch
    from PIL import Image

    arguments = [name, str(ckpt), str(tiny_data_root), "tiny", "--output", str(tmp_path / "g"), "--count", "4"]
    paths = gallery.main(arguments)
    assert Image.open(paths["pool"]).size == (8 * gallery.TILE, gallery.TILE)
    picks = gallery.pick_images(tiny_data_root, "tiny")
    assert [kind for kind, _, _ in picks][-1] == "good" and len(picks) >= 2
    assert Image.open(paths["branches"]).size == ((1 + len(rows)) * gallery.TILE, len(picks) * gallery.TILE)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_training_samples_show_the_models_own_pseudo_anomalies(name: str):
    """Models that train on pseudo-anomalies mark them in the masks (changed pixels); ED shows normal images."""
    import torch

    model = REGISTRY[name].model_class(**TINY_CONFIGS[name])
    size = int(model.hparams.image_size)
    generator = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    base = torch.stack([0.3 + 0.4 * xx, 0.5 * yy + 0.2, 0.4 + 0.1 * torch.sin(20 * xx)])
    shots = [(base + 0.05 * torch.rand(3, size, size, generator=generator)).clamp(0, 1) for _ in range(2)]
    images, masks = model.training_samples(shots, 6)
    assert images.shape == (6, 3, size, size) and masks.shape == (6, 1, size, size)
    again, _ = model.training_samples(shots, 6)
    torch.testing.assert_close(again, images)  # seeded like a fit, the fit state untouched
    if name == "Ed":
        assert float(masks.sum()) == 0.0
        return
    assert float(masks.sum()) > 0, "no pseudo-anomaly among 6 training samples"
    changed = (images - torch.stack([shots[i % 2] for i in range(6)])).abs().amax(1, keepdim=True) > 1e-3
    assert float((changed & (masks > 0.5)).sum()) > 0.5 * float((masks > 0.5).sum()) * 0.2


def test_every_plugin_model_has_branches():
    assert list(branches.BRANCHES) == list(REGISTRY)
    assert all(callable(spec.branch_notes) for spec in REGISTRY.values())


def test_gallery_inputs_follow_the_models_geometry_for_non_square_images(tmp_path: Path):
    """Images and masks of any aspect ratio come out at the model's size; the mask keeps its region."""
    import numpy as np
    import torch
    from PIL import Image
    from torchvision.transforms.v2 import Compose, Resize

    root = tmp_path / "c"
    for kind, size in (("crack", (90, 40)), ("good", (40, 70))):
        (root / "test" / kind).mkdir(parents=True)
        Image.fromarray(np.full((size[1], size[0], 3), 128, np.uint8)).save(root / "test" / kind / "000.png")
    (root / "ground_truth" / "crack").mkdir(parents=True)
    mask = np.zeros((40, 90), np.uint8)
    mask[:, 45:] = 255
    Image.fromarray(mask).save(root / "ground_truth" / "crack" / "000_mask.png")
    picks = gallery.pick_images(tmp_path, "c")
    assert [kind for kind, _, _ in picks] == ["crack", "good"]
    images, masks = gallery.model_inputs(Compose([Resize((32, 32), antialias=True)]), picks)
    assert images.shape == (2, 3, 32, 32) and masks.shape == (2, 1, 32, 32)
    assert masks[0, 0, :, 16:].all() and not masks[0, 0, :, :16].any() and not masks[1].any()
    torch.testing.assert_close(images, torch.full_like(images, 128 / 255), atol=1e-2, rtol=0)
