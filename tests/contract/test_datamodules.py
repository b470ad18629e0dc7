"""k-shot selection works with anomalib's MVTecAD, Folder (good images only) and Visa datamodules."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from anomalib.data import Folder, MVTecAD, Visa
from anomalib.engine import Engine

import anomalib_fewshot.models as plugin_models
from anomalib_fewshot.components.lifecycle.fewshot import SHOT_FILE_NAME, select_shots
from anomalib_fewshot.data.demo import make_demo_dataset
from tests.helpers import TINY_CONFIGS

pytestmark = pytest.mark.slow


def _visa_layout(tiny_root: Path, root: Path) -> Path:
    """Copy the tiny MVTec-layout data into Visa's preprocessed layout (visa_pytorch/<category>/...)."""
    target = root / "visa_pytorch" / "tiny"
    src = tiny_root / "tiny"
    shutil.copytree(src / "train" / "good", target / "train" / "good")
    shutil.copytree(src / "test" / "good", target / "test" / "good")
    (target / "test" / "bad").mkdir(parents=True)
    (target / "ground_truth" / "bad").mkdir(parents=True)
    for image in (src / "test" / "scratch").glob("*.png"):
        shutil.copy(image, target / "test" / "bad" / image.name)
        shutil.copy(
            src / "ground_truth" / "scratch" / f"{image.stem}_mask.png", target / "ground_truth" / "bad" / image.name
        )
    return root


def _datamodule(kind: str, tiny_data_root: Path, tmp_path: Path):
    if kind == "MVTecAD":
        return MVTecAD(root=tiny_data_root, category="tiny", num_workers=0, eval_batch_size=4)
    if kind == "Folder":
        # a user-style folder: good images only; test and validation anomalies are synthetic
        good = make_demo_dataset(tmp_path / "folder", "part", n_train=12, n_test_good=0, n_test_defect=0, size=64)
        return Folder(
            name="tiny",
            root=good / "train" / "good",
            normal_dir=".",
            test_split_mode="synthetic",
            val_split_mode="synthetic",
            num_workers=0,
            eval_batch_size=4,
            seed=0,
        )
    return Visa(root=_visa_layout(tiny_data_root, tmp_path / "visa"), category="tiny", num_workers=0, eval_batch_size=4)


@pytest.mark.parametrize("kind", ["MVTecAD", "Folder", "Visa"])
@pytest.mark.parametrize("name", plugin_models.__all__)
def test_k_shot_selection_per_datamodule(name: str, kind: str, tmp_path: Path, tiny_data_root: Path):
    model = getattr(plugin_models, name)(**{**TINY_CONFIGS[name], "epochs": 1})
    datamodule = _datamodule(kind, tiny_data_root, tmp_path)
    engine = Engine(default_root_dir=tmp_path / "results", logger=False, enable_progress_bar=False)
    engine.fit(model, datamodule=datamodule)
    record = json.loads((Path(engine.trainer.default_root_dir) / SHOT_FILE_NAME).read_text())
    normal = datamodule.train_data.samples
    normal_paths = normal[normal["label_index"] == 0]["image_path"].astype(str).tolist()
    assert record["shots"] == select_shots(normal_paths, TINY_CONFIGS[name]["k_shot"], 0)
    assert record["n_normal_images"] == len(normal_paths)
    metrics = engine.test(model, datamodule=datamodule)[0]
    assert "image_AUROC" in metrics
