"""Development grids (``evaluate_on: dev``): jobs test on the development split and never open a test image."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from anomalib_fewshot.benchmark import dev, grid, runner, store
from anomalib_fewshot.benchmark.job import family_metrics
from anomalib_fewshot.data.demo import make_demo_dataset
from anomalib_fewshot.data.dev_split import MANIFEST
from anomalib_fewshot.errors import InvalidArgumentError


@pytest.fixture(autouse=True)
def _no_plots(monkeypatch):
    monkeypatch.setattr("anomalib_fewshot.benchmark.plots.write_plots", lambda rows, output: [])


def _datasets(root: Path) -> list[dict[str, Any]]:
    """Two small MVTec-layout datasets whose test images and masks are unreadable (garbage bytes)."""
    out = []
    for name, seed in (("a", 1), ("b", 2)):
        make_demo_dataset(root / name, "plate", n_train=40, n_test_good=2, n_test_defect=2, size=64, seed=seed)
        for path in [*(root / name / "plate" / "test").rglob("*.png"), *(root / name / "plate").rglob("*_mask.png")]:
            path.write_bytes(b"not an image: a development grid must never open this file")
        out.append({"name": name, "root": str(root / name), "category": "plate"})
    return out


def _grid(tmp_path: Path, models: list[dict[str, Any]], **extra: Any) -> Path:
    config = {
        "output": str(tmp_path / "out"),
        "jobs_dir": str(tmp_path / "jobs"),
        "evaluate_on": "dev",
        "dev_cache": str(tmp_path / "dev_cache"),
        "dev_split": {"cap": 12},
        "grid": {"models": models, "datasets": _datasets(tmp_path / "data"), "k_shot": [1], "seeds": [0]},
        **extra,
    }
    path = tmp_path / "dev.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_dev_jobs_carry_the_split_in_their_key_and_refuse_full_k(tmp_path: Path):
    path = _grid(tmp_path, [{"model": "Patchcore"}])
    _, jobs = grid.load_grid(path)
    assert {job["split"] for job in jobs} == {"dev"}
    assert {store.job_key(job)[-1] for job in jobs} == {"dev"}
    test_job = {**jobs[0], "split": "test"}
    assert store.job_key(test_job) != store.job_key(jobs[0])  # never the same row
    assert store.job_key({k: v for k, v in test_job.items() if k != "split"}) == store.job_key(test_job)
    # a test job's work folder and label keep their pre-split names (existing exports stay findable)
    assert grid.job_work_dir(tmp_path, test_job).name == "Patchcore__a_1_0"
    assert store.job_label(test_job) == "Patchcore//a/1/0"
    assert store.job_label(jobs[0]) == "Patchcore//a/1/0/dev"
    config = yaml.safe_load(path.read_text())
    config["grid"]["k_shot"] = [1, "full"]
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(InvalidArgumentError, match="development images"):
        grid.load_grid(path)
    config["evaluate_on"] = "val"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(InvalidArgumentError, match="evaluate_on"):
        grid.load_grid(path)


def test_a_dev_grid_builds_each_split_once_and_points_its_jobs_at_it(tmp_path: Path, monkeypatch):
    path = _grid(
        tmp_path,
        [{"model": "Patchcore"}, {"model": "Fdsl", "variant": "h", "profile": "fdsl_lite", "head": "b"}],
        heads=[{"dataset": "b", "profile": "fdsl_lite"}],
    )
    calls = []

    def fake_run_job(job: dict[str, Any], jobs_dir: Path, timeout_s: float) -> dict[str, Any]:
        calls.append(job)
        return {**{f: job[f] for f in store.KEY_FIELDS}, "profile": job["profile"], "status": "ok", "aupro": 0.5}

    monkeypatch.setattr(runner, "run_job", fake_run_job)
    monkeypatch.setattr(runner, "ensure_head", lambda *a: pytest.fail("a development grid trained a head"))
    output = runner.run_grid(path)
    assert sorted((job["model"], job["dataset"]) for job in calls) == [("Patchcore", "a"), ("Patchcore", "b")]
    for job in calls:
        root = Path(job["root"])
        assert root == (tmp_path / "dev_cache" / dev.GENERATOR_VERSION / job["dataset"]).resolve()
        assert (root / "plate" / MANIFEST).is_file()
        assert job["dev_generator"] == dev.GENERATOR_VERSION
    rows = store.read_rows(output / "results.csv")
    assert {row["split"] for row in rows} == {"dev"}
    report = (output / "results.md").read_text()
    assert "heads train on a test split" in report
    # built once: a second run (nothing left to do) does not rebuild
    manifest = tmp_path / "dev_cache" / dev.GENERATOR_VERSION / "a" / "plate" / MANIFEST
    stamp = manifest.stat().st_mtime_ns
    dev.ensure_dev_splits(yaml.safe_load(path.read_text()), {"a"})
    assert manifest.stat().st_mtime_ns == stamp


def test_a_dataset_added_later_leaves_the_existing_splits_as_they_were(tmp_path: Path):
    """``dev_foreign`` pins a split's foreign pool: adding a dataset does not change (or silently reuse) old splits."""
    datasets = _datasets(tmp_path / "data")
    make_demo_dataset(tmp_path / "data" / "c", "plate", n_train=40, n_test_good=2, n_test_defect=2, size=64, seed=3)
    added = {"name": "c", "root": str(tmp_path / "data" / "c"), "category": "plate"}

    def config(entries: list[dict[str, Any]], cache: str) -> dict[str, Any]:
        return {"dev_cache": str(tmp_path / cache), "dev_split": {"cap": 12}, "grid": {"datasets": entries}}

    def manifest(cache: str, name: str) -> dict[str, Any]:
        return json.loads((tmp_path / cache / dev.GENERATOR_VERSION / name / "plate" / MANIFEST).read_text())

    dev.ensure_dev_splits(config(datasets, "before"), {"a", "b"})
    pinned = [{**datasets[0], "dev_foreign": ["b"]}, {**datasets[1], "dev_foreign": ["a"]}]
    dev.ensure_dev_splits(config([*pinned, added], "after"), {"a", "b", "c"})
    for name in ("a", "b"):
        before, after = manifest("before", name), manifest("after", name)
        assert after["foreign_images"] == before["foreign_images"] and after["images"] == before["images"]
    sources = {Path(p).parts[-5] for p in manifest("after", "c")["foreign_images"]}
    assert sources == {"a", "b"}  # the new dataset draws from every other one
    # the old cache read by a grid that gives it another foreign pool: a clear error, not a silent reuse
    with pytest.raises(InvalidArgumentError, match=r"other foreign images.*dev_foreign"):
        dev.ensure_dev_splits(config([*datasets, added], "before"), {"a"})
    with pytest.raises(InvalidArgumentError, match=r"dev_foreign names \['z'\]"):
        dev.ensure_dev_splits(config([{**datasets[0], "dev_foreign": ["z"]}, datasets[1]], "x"), {"a"})


def test_family_metrics_score_each_family_against_the_good_images():
    rng = np.random.default_rng(0)
    families = ["good"] * 4 + ["seen"] * 3 + ["hidden"] * 3
    labels = np.array([0] * 4 + [1] * 6)
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.9, 0.8, 0.7, 0.25, 0.15, 0.35])  # "hidden" sits among the good
    masks = np.zeros((10, 8, 8), bool)
    masks[4:, 2:4, 2:4] = True
    maps = rng.random((10, 8, 8)) * 0.1
    maps[4:7, 2:4, 2:4] += 1.0  # only "seen" is visible in the maps
    metrics = family_metrics(scores, maps, labels, masks, families)
    assert set(metrics) == {f"{m}@{f}" for m in ("image_auroc", "pixel_auroc", "aupro") for f in ("seen", "hidden")}
    assert metrics["image_auroc@seen"] == 1.0
    assert metrics["image_auroc@hidden"] == pytest.approx(0.5)
    assert metrics["pixel_auroc@seen"] == 1.0
    assert metrics["pixel_auroc@hidden"] < 0.8


@pytest.mark.slow
def test_real_dev_jobs_run_without_opening_a_test_image(tmp_path: Path, monkeypatch):
    """Patchcore and PCSNet (quick) end to end on datasets whose test images are garbage: the jobs succeed.

    The grid is accuracy-only (``speed: false``): no export and no timing (the smoke grid covers both).
    """
    monkeypatch.chdir(tmp_path)
    pcsnet = {"epochs": 1, "image_size": 64, "resize_size": None, "grid_size": 16, "num_nearest": 8,
              "pyramid_bins": [15, 8, 4, 2]}  # fmt: skip
    path = _grid(
        tmp_path,
        [{"model": "Patchcore"}, {"model": "Pcsnet", "variant": "q", "profile": "pcsnet_lite", "overrides": pcsnet}],
    )
    config = yaml.safe_load(path.read_text())
    config["grid"]["datasets"] = config["grid"]["datasets"][:1]
    config["speed"] = False
    path.write_text(yaml.safe_dump(config))
    output = runner.run_grid(path)
    rows = store.read_rows(output / "results.csv")
    manifest = json.loads((tmp_path / "dev_cache" / dev.GENERATOR_VERSION / "a" / "plate" / MANIFEST).read_text())
    assert len(rows) == 2
    for row in rows:
        assert row["status"] == "ok", row
        assert row["split"] == "dev"
        assert int(row["n_test"]) == sum(manifest["counts"].values())
        assert 0 <= float(row["aupro"]) <= 1
        assert float(row["fit_s"]) >= 0 and not row.get("openvino_ms") and not row.get("torch_ms")
        assert not list((tmp_path / "jobs").glob("*/export"))
        for family in (f for f in manifest["counts"] if f != "good"):
            assert 0 <= float(row[f"image_auroc@{family}"]) <= 1, family
