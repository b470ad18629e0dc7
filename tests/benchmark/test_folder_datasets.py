"""A user's own labelled ``Folder`` dataset (with and without masks) through the runner, the dev split and recommend."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from anomalib_fewshot import cli
from anomalib_fewshot.benchmark import dev, recommend, runner, store
from anomalib_fewshot.benchmark.datasets import as_entry, build_datamodule, parse_dataset, training_images
from anomalib_fewshot.benchmark.grid import load_grid
from anomalib_fewshot.benchmark.job import compute_metrics
from anomalib_fewshot.benchmark.report import summarise
from anomalib_fewshot.data.demo import DEFECTS, make_demo_dataset
from anomalib_fewshot.data.dev_split import MANIFEST
from anomalib_fewshot.errors import InvalidArgumentError, MissingFileError


def _folder(tmp_path: Path, n_train: int = 12, masks: bool = True, normal_test: bool = True) -> dict:
    """A Folder entry over the demo dataset's folders (one defect type)."""
    base = tmp_path / "data" / "plate"
    if not base.is_dir():
        make_demo_dataset(tmp_path / "data", "plate", n_train=n_train, n_test_good=3, n_test_defect=4, size=64)
    entry = {"name": "user", "root": str(base), "normal_dir": "train/good", "abnormal_dir": f"test/{DEFECTS[0]}"}
    if masks:
        entry["mask_dir"] = f"ground_truth/{DEFECTS[0]}"
    if normal_test:
        entry["normal_test_dir"] = "test/good"
    return entry


def test_a_folder_entry_is_checked_and_named_in_every_error(tmp_path: Path):
    entry = _folder(tmp_path)
    parsed = parse_dataset(entry, "grid.yaml: dataset 1")
    assert parsed["datamodule"] == "Folder" and parsed["category"] == "user"
    assert parsed["folder"]["normal_dir"] == str((tmp_path / "data/plate/train/good").resolve())
    assert parse_dataset(as_entry(parsed), "again") == parsed
    assert parse_dataset({"name": "m", "root": "x", "category": "c"}, "w")["folder"] is None

    with pytest.raises(MissingFileError, match=r"dataset user: abnormal_dir '.*test/nothing' is not a folder"):
        parse_dataset({**entry, "abnormal_dir": "test/nothing"}, "g")
    empty = tmp_path / "data" / "plate" / "test" / "empty"
    empty.mkdir()
    with pytest.raises(InvalidArgumentError, match=r"abnormal_dir '.*test/empty' holds no images"):
        parse_dataset({**entry, "abnormal_dir": "test/empty"}, "g")
    with pytest.raises(InvalidArgumentError, match=r"missing \['abnormal_dir'\]"):
        parse_dataset({k: v for k, v in entry.items() if k != "abnormal_dir"}, "g")
    with pytest.raises(InvalidArgumentError, match=r"needs \['category'\]"):
        parse_dataset({"name": "m", "root": "x"}, "g")
    masks = tmp_path / "masks"
    shutil.copytree(tmp_path / "data" / "plate" / "ground_truth" / DEFECTS[0], masks)
    next(masks.iterdir()).unlink()
    with pytest.raises(InvalidArgumentError, match=r"mask_dir '.*masks' must hold one mask per image .* 4 images, 3"):
        parse_dataset({**entry, "mask_dir": str(masks)}, "g")


def test_without_a_normal_test_folder_the_held_out_normals_are_fixed_and_never_shots(tmp_path: Path):
    spec = parse_dataset(_folder(tmp_path, n_train=20, normal_test=False), "g")
    train = training_images(spec)
    assert training_images(spec) == train  # the fixed seed: the same hold-out every time
    module = build_datamodule(spec, num_workers=0)
    module.setup()
    test = module.test_data.samples
    held_out = sorted(test.loc[test["label_index"] == 0, "image_path"].astype(str))
    assert len(held_out) == 4 and not set(held_out) & set(train) and len(train) == 16
    assert len(test) == 4 + 4 and len(module.val_data) == len(test)  # the whole test folder; validation = test
    with_dir = parse_dataset(_folder(tmp_path, normal_test=True), "g")
    assert len(training_images(with_dir)) == 20


def test_a_grid_reads_folder_datasets_and_builds_their_development_split_from_training_images(tmp_path: Path):
    entry = _folder(tmp_path, n_train=20, normal_test=False)
    config = {"output": str(tmp_path / "out"), "jobs_dir": str(tmp_path / "jobs"), "evaluate_on": "dev",
              "dev_cache": str(tmp_path / "dev"), "dev_split": {"cap": 12, "exclude_max_k": 1},
              "grid": {"models": [{"model": "Patchcore"}], "datasets": [entry], "k_shot": [1],
                       "seeds": [0]}}  # fmt: skip
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(config))
    loaded, (job,) = load_grid(path)
    assert job["datamodule"] == "Folder" and job["folder"]["mask_dir"]
    roots = dev.ensure_dev_splits(loaded, {"user"})
    manifest = json.loads((roots["user"] / "user" / MANIFEST).read_text())
    train = set(training_images(loaded["grid"]["datasets"][0]))
    assert manifest["n_train_images"] == len(train) == 16
    assert {record["source"] for record in manifest["images"]} <= train  # never a held-out test image
    on_dev = dev.on_dev_split(job, roots)
    assert on_dev["datamodule"] == "MVTecAD" and on_dev["folder"] is None and on_dev["category"] == "user"
    config["heads"] = [{"dataset": "user", "profile": "fdsl_lite"}]
    path.write_text(yaml.safe_dump(config))
    from anomalib_fewshot.benchmark.grid import head_specs

    with pytest.raises(InvalidArgumentError, match="Folder dataset"):
        head_specs(load_grid(path)[0])


def test_without_masks_the_pixel_metrics_are_empty_never_zero():
    rng = np.random.default_rng(0)
    scores, maps = rng.random(6), rng.random((6, 8, 8))
    labels, masks = np.array([0, 0, 0, 1, 1, 1]), np.zeros((6, 8, 8), bool)
    metrics = compute_metrics(scores, maps, labels, masks, pixel=False)
    assert metrics["pixel_auroc"] is None and metrics["aupro"] is None and metrics["pixel_f1max"] is None
    marked = masks.copy()
    marked[3:, 2:4, 2:4] = True
    assert metrics["image_auroc"] == compute_metrics(scores, maps, labels, marked)["image_auroc"]
    row = {"model": "A", "variant": "", "dataset": "user", "k_shot": "1", "seed": "0", "split": "test",
           "status": "ok", "image_auroc": "0.7", "pixel_auroc": "", "aupro": ""}  # fmt: skip
    table = summarise([row])
    assert "| A |  | user | 1 | 1 | 0.700 ± 0.000 | – | – |" in table
    assert "without pixel masks (image labels only; pixel columns –): user" in table


def _tiny_pcsnet() -> dict:
    return {"model": "Pcsnet", "variant": "q", "profile": "pcsnet_lite", "threads": 1,
            "overrides": {"epochs": 1, "image_size": 64, "resize_size": None, "grid_size": 16, "num_nearest": 8,
                          "pyramid_bins": [15, 8, 4, 2]}}  # fmt: skip


@pytest.mark.slow
def test_folder_datasets_with_and_without_masks_run_through_the_runner(tmp_path: Path):
    with_masks = {**_folder(tmp_path, n_train=10), "name": "masked"}
    without = {**_folder(tmp_path, masks=False, normal_test=False), "name": "unmasked"}
    config = {"output": str(tmp_path / "out"), "jobs_dir": str(tmp_path / "jobs"), "speed": False,
              "grid": {"models": [{"model": "Patchcore", "threads": 1}, _tiny_pcsnet()],
                       "datasets": [with_masks, without], "k_shot": [1], "seeds": [0]}}  # fmt: skip
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(config))
    output = runner.run_grid(path)
    rows = {(r["model"], r["dataset"]): r for r in store.read_rows(output / "results.csv")}
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows.values()), rows
    unmasked = parse_dataset(without, "g")
    train = set(training_images(unmasked))
    for model in ("Patchcore", "Pcsnet"):
        masked, bare = rows[(model, "masked")], rows[(model, "unmasked")]
        assert int(masked["n_test"]) == 3 + 4 and int(bare["n_test"]) == 2 + 4  # whole test folders (10 // 5 held out)
        assert 0 <= float(masked["pixel_auroc"]) <= 1 and 0 <= float(masked["aupro"]) <= 1
        assert bare["pixel_auroc"] == bare["aupro"] == bare["pixel_f1max"] == ""
        assert 0 <= float(bare["image_auroc"]) <= 1 and bare["image_fpr"] != ""
        assert set(json.loads(bare["shots"])) <= train  # a held-out test image is never a shot
    report = (output / "results.md").read_text()
    assert "without pixel masks (image labels only; pixel columns –): unmasked" in report


@pytest.mark.slow
def test_recommend_ranks_models_on_a_labelled_folder_without_masks(tmp_path: Path, capsys):
    spec = tmp_path / "part.yaml"
    spec.write_text(yaml.safe_dump(_folder(tmp_path, n_train=10, masks=False)))
    assert cli.main(["recommend", "--dataset", str(spec), "--output", str(tmp_path / "out"), "--models",
                     "Patchcore", "--k", "1", "2"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert out.index("WARNING: ranking on your labelled images") < out.index("estimated total:")
    rows = store.read_rows(tmp_path / "out" / "results" / "results.csv")
    assert sorted(r["k_shot"] for r in rows) == ["1", "2"] and {r["split"] for r in rows} == {"test"}
    assert all(int(r["n_test"]) == 3 + 4 for r in rows)
    assert "| 1 | Patchcore |" in out and "| – | – |" in out and "labelled images (the whole test folder)" in out


def test_recommend_refuses_a_bad_dataset_spec_before_any_work(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(runner, "run_grid", lambda *a, **k: pytest.fail("ran a job"))
    spec = tmp_path / "part.yaml"
    spec.write_text(yaml.safe_dump({**_folder(tmp_path), "abnormal_dir": "test/none"}))
    with pytest.raises(MissingFileError, match=r"part.yaml: dataset user: abnormal_dir '.*test/none'"):
        recommend.recommend_on_dataset(spec, tmp_path / "out", ["Patchcore"], [1])
    spec.write_text(yaml.safe_dump(_folder(tmp_path)))
    with pytest.raises(InvalidArgumentError, match="12 normal training images, fewer than k = 16"):
        recommend.recommend_on_dataset(spec, tmp_path / "out", ["Patchcore"], [16])
    assert not (tmp_path / "out").exists()
