"""The benchmark runner: a tiny grid end to end, failures recorded per job, resume without redoing jobs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from anomalib_fewshot.benchmark import grid, runner, store
from anomalib_fewshot.benchmark.job import compute_metrics
from anomalib_fewshot.benchmark.report import write_report
from anomalib_fewshot.data.demo import DEFECTS, make_demo_dataset
from anomalib_fewshot.errors import InvalidArgumentError
from tests.helpers import write_fake_grid

pytestmark = pytest.mark.slow


SMOKE = Path(__file__).resolve().parents[2] / "configs" / "benchmark" / "smoke.yaml"


def test_smoke_grid_covers_every_plugin_model():
    import anomalib_fewshot.models as plugin_models

    config = yaml.safe_load(SMOKE.read_text())
    assert set(plugin_models.__all__) <= {entry["model"] for entry in config["grid"]["models"]}


def test_smoke_grid_runs_records_failures_plots_and_resumes(tmp_path: Path, monkeypatch):
    """configs/benchmark/smoke.yaml end to end (every plugin model and both baselines, k = 1 and full)."""
    monkeypatch.chdir(tmp_path)
    config = yaml.safe_load(SMOKE.read_text())
    make_demo_dataset(Path(config["grid"]["datasets"][0]["root"]), "plate", n_train=4, n_test_good=3,
                      n_test_defect=3, size=128)  # fmt: skip
    broken = {"model": "Dfd", "profile": "dfd_lite", "overrides": {"no_such_argument": 1}}
    config["grid"]["models"].append(broken)
    config["grid"]["skip"] = [{"model": "Dfd", "k_shot": "full", "reason": "too slow for the smoke grid"}]
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(config))
    output = runner.run_grid(path)

    rows = {(r["model"], r["k_shot"], r["variant"]): r for r in store.read_rows(output / "results.csv")}
    expected_ok = [("Pcsnet", k, "pcsnet_lite-quick") for k in ("1", "full")]
    expected_ok += [("Patchcore", k, "") for k in ("1", "full")] + [("Dfd", "1", "dfd_lite-quick")]
    expected_ok += [("Padim", "full", "")] + [("Ed", k, "ed_lite-quick") for k in ("1", "full")]
    expected_ok += [("Fdsl", k, "fdsl_lite-quick") for k in ("1", "full")]  # pseudo-anomaly head
    for key in expected_ok:
        row = rows[key]
        assert row["status"] == "ok", row
        for field in ("image_auroc", "pixel_auroc", "aupro", "image_f1max", "pixel_f1max", "fit_s", "torch_ms",
                      "openvino_ms", "peak_rss_mb"):  # fmt: skip
            assert float(row[field]) >= 0, (key, field)
        assert row["machine"].endswith(" cores"), row  # timings name their machine
        for defect in DEFECTS:  # one column set per defect type of the test folder
            assert 0 <= float(row[f"image_auroc@{defect}"]) <= 1, (key, defect)
        assert row["finished_utc"].startswith("20"), row
    assert rows[("Pcsnet", "full", "pcsnet_lite-quick")]["shots"].count(".png") == 4  # all normal images
    # Padim at k = 1: covariance over N - 1 = 0 samples gives NaN scores -> a recorded failure, not a crash
    assert rows[("Padim", "1", "")]["status"] == "failed"
    assert "non-finite" in rows[("Padim", "1", "")]["error"]
    broken_row = rows[("Dfd", "1", 'dfd_lite+{"no_such_argument":1}')]
    assert broken_row["status"] == "failed"
    assert "no_such_argument" in broken_row["error"]
    assert ("Dfd", "full", "dfd_lite-quick") not in rows  # skipped on purpose

    report = (output / "results.md").read_text()
    assert "| Pcsnet | pcsnet_lite-quick | demo | 1 | 1 |" in report
    assert "progress: 11 of 12 jobs finished, 1 of them failed as expected (rerun the command to resume)" in report
    assert "Failed jobs" in report
    assert "- Padim//demo/1/0 (expected: Padim's covariance divides by N - 1 = 0 at k = 1 (NaN scores)): " in report
    assert "rows ran on: " in report
    assert "Left out on purpose:\n- too slow for the smoke grid: 2 job(s)" in report  # quick and broken Dfd
    for plot in ("auroc_vs_k.png", "accuracy_vs_speed.png"):
        assert (output / plot).read_bytes()[:4] == b"\x89PNG"
        assert f"]({plot})" in report

    # Resume: finished jobs and expected failures are not run again; only the unexpected failure is retried.
    calls = []
    monkeypatch.setattr(runner, "run_job", lambda job, out, t: calls.append(job) or {**job, "status": "failed"})
    runner.run_grid(path)
    assert sorted((c["model"], str(c["k_shot"])) for c in calls) == [("Dfd", "1")]
    assert rows[("Pcsnet", "1", "pcsnet_lite-quick")]["status"] == "ok"
    assert store.read_rows(output / "results.csv")[0]["status"] == "ok"


def test_fdsl_heads_are_never_evaluated_on_their_training_dataset(tmp_path: Path):
    config = {
        "output": str(tmp_path / "out"),
        "heads": [{"dataset": "a", "profile": "fdsl_lite", "epochs": 1}],
        "grid": {
            "models": [{"model": "Fdsl", "variant": "head_a", "profile": "fdsl_lite", "head": "a"}],
            "datasets": [{"name": "a", "root": "x", "category": "c"}, {"name": "b", "root": "y", "category": "c"}],
            "k_shot": [1],
            "seeds": [0],
        },
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(config))
    loaded, jobs = grid.load_grid(path)
    skipped = grid.skipped_jobs(loaded, jobs)
    assert [(job["dataset"], reason) for job, reason in skipped] == [
        ("a", "the head was trained on this dataset's annotated test split")
    ]
    specs = grid.head_specs(loaded)
    assert specs["a"]["root"] == str(Path("x").resolve()) and specs["a"]["category"] == "c"
    assert grid.head_path(tmp_path, specs["a"]) == tmp_path / "heads" / "fdsl_lite_a.pt"
    loaded["grid"]["models"][0]["head"] = "nowhere"
    with pytest.raises(ValueError, match="not listed under heads"):
        grid.head_specs(loaded)


def test_grid_rejects_bad_k(tmp_path: Path):
    config = yaml.safe_load(SMOKE.read_text())
    config["grid"]["k_shot"] = [0]
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match="k_shot"):
        grid.load_grid(path)


def test_metrics_on_raw_scores_are_not_squashed():
    """Large raw scores must not saturate (torchmetrics would apply a sigmoid to values outside [0, 1])."""
    import numpy as np

    scores = np.array([100.0, 101.0, 102.0, 103.0])
    labels = np.array([0, 0, 1, 1])
    maps = np.zeros((4, 8, 8)) + scores[:, None, None]
    masks = np.zeros((4, 8, 8), dtype=bool)
    masks[2:, 2:4, 2:4] = True
    maps[2:, 2:4, 2:4] += 50
    metrics = compute_metrics(scores, maps, labels, masks)
    assert metrics["image_auroc"] == pytest.approx(1.0)
    assert metrics["pixel_auroc"] == pytest.approx(1.0)
    assert metrics["aupro"] == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("path", sorted(SMOKE.parent.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_benchmark_configs_load(path: Path):
    from anomalib_fewshot.config import config_dir

    config, jobs = grid.load_grid(path)
    assert jobs
    profiles = {p.stem for p in (config_dir() / "model").glob("*.yaml")}
    assert {job["profile"] for job in jobs if job["profile"]} <= profiles
    for rule in config["grid"].get("skip", []):
        assert set(rule) - {"reason"} <= set(jobs[0]), rule
    kept = len(jobs) - len(grid.skipped_jobs(config, jobs))
    assert kept > 0


def test_report_names_every_machine_its_rows_ran_on(tmp_path: Path):
    """Rows measured on different machines (one grid resumed over sessions) are listed with their machine."""
    row = {"model": "Dfd", "variant": "v", "dataset": "d", "k_shot": "1", "status": "ok", "image_auroc": "0.9"}
    store.upsert_row(tmp_path / "results.csv", {**row, "seed": "0", "machine": "CPU A, 2 cores"})
    store.upsert_row(tmp_path / "results.csv", {**row, "seed": "1", "machine": "CPU B, 2 cores"})
    store.upsert_row(tmp_path / "results.csv", {**row, "seed": "2", "machine": "CPU B, 2 cores"})
    store.upsert_row(tmp_path / "results.csv", {**row, "seed": "3"})  # a row from before the column existed
    report = write_report(Path("grid.yaml"), tmp_path, [], []).read_text()
    assert "rows ran on: CPU A, 2 cores (1 row); CPU B, 2 cores (2 rows); not recorded (1 row)" in report


def _row(seed: int, status: str = "ok", profile: str = "p", **fields: str) -> dict[str, str]:
    key = {"model": "Dfd", "variant": "v", "dataset": "d", "k_shot": "1", "seed": str(seed)}
    return {**key, "profile": profile, "status": status, **fields}


def _grid(tmp_path: Path, **grid: object) -> Path:
    return write_fake_grid(tmp_path, grid=grid)


def test_merge_imports_rows_of_the_same_job_and_never_replaces_a_finished_one(tmp_path: Path):
    """--merge: rows of identical jobs (key and profile) from another grid; ok rows here are kept."""
    here, other = tmp_path / "here.csv", tmp_path / "other.csv"
    store.upsert_row(here, _row(0, image_auroc="0.5"))  # finished here: kept
    store.upsert_row(here, _row(1, status="timeout"))  # failed here, ok there: replaced
    for row in (_row(0, image_auroc="0.9"), _row(1, image_auroc="0.8"), _row(2, status="failed", error="nan"),
                _row(2, profile="other") | {"seed": "3"}, _row(0) | {"dataset": "elsewhere"}):  # fmt: skip
        store.upsert_row(other, row)
    _, jobs = grid.load_grid(_grid(tmp_path, seeds=[0, 1, 2, 3]))
    assert store.merge_rows(here, [other], jobs) == 2
    rows = {r["seed"]: r for r in store.read_rows(here)}
    assert rows["0"]["image_auroc"] == "0.5"
    assert rows["1"]["status"] == "ok" and rows["1"]["image_auroc"] == "0.8"
    assert rows["2"]["status"] == "failed"  # a recorded failure is a result too
    assert "3" not in rows  # same key, different profile: a different job
    assert store.merge_rows(here, [other], jobs) == 0  # idempotent
    with pytest.raises(FileNotFoundError, match=r"nowhere\.csv"):
        store.merge_rows(here, [tmp_path / "nowhere.csv"], jobs)
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"bad\.csv"):
        store.merge_rows(here, [tmp_path / "bad.csv"], jobs)


def test_expected_failures_count_as_finished_and_report_only_runs_nothing(tmp_path: Path, monkeypatch):
    """An expected failure runs until recorded, then is finished; --report-only writes the report, runs no job."""
    path = _grid(tmp_path, expected_failures=[{"model": "Dfd", "seed": [1, 2], "reason": "known NaN"}])
    monkeypatch.setattr(runner, "run_job", lambda *a: pytest.fail("--report-only must not run jobs"))
    other = tmp_path / "other.csv"
    store.upsert_row(other, _row(0))
    store.upsert_row(other, _row(1, status="failed", error="failed: non-finite scores"))
    assert runner.main(["-c", str(path), "--merge", str(other), "--report-only"]) == 0
    report = (tmp_path / "out" / "results.md").read_text()
    assert "progress: 2 of 3 jobs finished, 1 of them failed as expected (rerun the command to resume)" in report
    assert "- Dfd/v/d/1/1 (expected: known NaN): failed: non-finite scores" in report

    calls = []  # resume: only the job without a row runs (the expected failure is not retried)
    monkeypatch.setattr(runner, "run_job", lambda job, out, t: calls.append(job) or {**job, "status": "failed"})
    runner.run_grid(path)
    assert [c["seed"] for c in calls] == [2]
    report = (tmp_path / "out" / "results.md").read_text()
    assert "progress: 3 of 3 jobs finished, 2 of them failed as expected (complete)" in report


def test_a_job_that_dies_without_a_word_names_its_exit_code(tmp_path: Path, monkeypatch):
    """A job process killed by a signal (or exiting silently) logs nothing: the row still says what happened."""
    import subprocess

    job = {"model": "Pcsnet", "variant": "v", "dataset": "d", "k_shot": 1, "seed": 0, "split": "dev", "profile": "p"}
    monkeypatch.setattr(runner.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, -9))
    row = runner.run_job(job, tmp_path, timeout_s=10)
    assert row["status"] == "failed"
    assert row["error"].startswith("failed: exit code -9, nothing logged (log: ")
    monkeypatch.setattr(runner.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0))
    assert runner.run_job(job, tmp_path, timeout_s=10)["error"].startswith("failed: no result.json written")


def test_offline_evaluation_reads_mixed_size_images_as_the_engine_does(tmp_path: Path):
    """The diagnosis tools' datamodule resizes each image before collation: scores do not depend on the batch.

    A plain datamodule collates differently sized images by resizing them to the batch's largest one first (what
    made offline magnetic-tile scores depend on the batch); the evaluation datamodule must not.
    """
    from types import SimpleNamespace

    import numpy as np
    import torch
    from anomalib.data import InferenceBatch, MVTecAD
    from anomalib.pre_processing import PreProcessor
    from PIL import Image
    from torchvision.transforms.v2 import Resize

    from anomalib_fewshot.benchmark.job import evaluation_datamodule, raw_predictions

    make_demo_dataset(tmp_path, "plate", n_train=2, n_test_good=3, n_test_defect=3, size=48, seed=0)
    for index, path in enumerate(sorted((tmp_path / "plate").rglob("*.png"))):
        size = (48 + 16 * (index % 3), 48 + 8 * (index % 2))  # (width, height): mixed sizes and aspect ratios
        image = Image.open(path)
        image.resize(size, Image.Resampling.NEAREST if "mask" in path.name else Image.Resampling.BILINEAR).save(path)

    def score(x: torch.Tensor) -> InferenceBatch:
        return InferenceBatch(pred_score=x.std(dim=(1, 2, 3)), anomaly_map=x[:, :1])

    model = SimpleNamespace(pre_processor=PreProcessor(Resize((32, 32), antialias=True)), model=score)
    one = raw_predictions(model, evaluation_datamodule(model, tmp_path, "plate", batch_size=1).test_dataloader())
    six = raw_predictions(model, evaluation_datamodule(model, tmp_path, "plate", batch_size=6).test_dataloader())
    for a, b in zip(one, six, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    plain = MVTecAD(root=tmp_path, category="plate", num_workers=0, eval_batch_size=6)
    plain.setup()
    collated = raw_predictions(model, plain.test_dataloader())
    assert not np.allclose(collated[0], one[0], rtol=1e-4), "the scenario must depend on the batch without the fix"


def test_training_seeds_are_a_job_key_field_that_leaves_older_rows_and_folders_as_they_were(tmp_path: Path):
    from anomalib_fewshot.benchmark.grid import job_work_dir, load_grid

    path = write_fake_grid(tmp_path, grid={"seeds": [0], "train_seeds": [0, 1]})
    _, jobs = load_grid(path)
    assert [(job["seed"], job["train_seed"]) for job in jobs] == [(0, 0), (0, 1)]
    same, other = jobs
    assert store.job_key(same) != store.job_key(other)
    # a row written before the field existed (no train_seed column) is the job trained with its few-shot seed
    old_row = {k: v for k, v in store.job_row(same, status="ok").items() if k != "train_seed"}
    assert store.job_key(old_row) == store.job_key(same) and store.job_key(
        {**old_row, "train_seed": ""}
    ) == store.job_key(same)
    assert store.job_label(same) == "Dfd/v/d/1/0" and store.job_label(other) == "Dfd/v/d/1/0/t1"
    assert job_work_dir(tmp_path, same).name == "Dfd_v_d_1_0" and job_work_dir(tmp_path, other).name == "Dfd_v_d_1_0_t1"
    (tmp_path / "b").mkdir()
    (tmp_path / "c").mkdir()
    _, (default,) = load_grid(write_fake_grid(tmp_path / "b", grid={"seeds": [2]}))
    assert default["train_seed"] == 2 and store.job_label(default) == "Dfd/v/d/1/2"
    for bad in (["a"], [True], [-1], 3):
        with pytest.raises(InvalidArgumentError, match="train_seeds must be a list of non-negative integers"):
            load_grid(write_fake_grid(tmp_path / "c", grid={"train_seeds": bad}))


def test_a_job_with_another_training_seed_builds_its_model_with_it():
    from anomalib_fewshot.benchmark.job import build_model

    spec = {"model": "Pcsnet", "profile": "pcsnet_lite", "k_shot": 1, "seed": 3, "overrides": {"pre_trained": False}}
    assert build_model({**spec, "train_seed": 3}).train_seed == 3
    assert "train_seed" not in build_model(spec).hparams or build_model(spec).hparams["train_seed"] is None
    model = build_model({**spec, "train_seed": 7})
    assert model.train_seed == 7 and model.few_shot_seed == 3
