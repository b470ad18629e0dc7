"""The benchmark runner: a tiny grid end to end, failures recorded per job, resume without redoing jobs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from anomalib_fewshot.benchmark import runner
from anomalib_fewshot.benchmark.job import compute_metrics
from anomalib_fewshot.data.demo import make_demo_dataset

pytestmark = pytest.mark.slow


def _config(tmp_path: Path, models: list[dict]) -> Path:
    data = tmp_path / "data"
    make_demo_dataset(data, "plate", n_train=4, n_test_good=3, n_test_defect=3, size=128)
    config = {
        "output": str(tmp_path / "out"),
        "timeout_s": 600,
        "grid": {
            "models": models,
            "datasets": [{"name": "demo", "root": str(data), "category": "plate"}],
            "k_shot": [1],
            "seeds": [0],
        },
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_grid_runs_records_failures_and_resumes(tmp_path: Path, monkeypatch):
    dfd = {
        "model": "Dfd",
        "variant": "lite-quick",
        "profile": "dfd_lite",
        "overrides": {"samples_per_shot": 4, "epochs": 1, "image_size": 128},
    }
    broken = {"model": "Dfd", "profile": "dfd_lite", "overrides": {"no_such_argument": 1}}
    path = _config(tmp_path, [dfd, broken])
    output = runner.run_grid(path)
    rows = runner.read_rows(output / "results.csv")
    assert [r["status"] for r in rows] == ["ok", "failed"]
    ok = rows[0]
    for field in ("image_auroc", "pixel_auroc", "aupro", "fit_s", "torch_ms", "openvino_ms", "peak_rss_mb"):
        assert float(ok[field]) >= 0
    assert "no_such_argument" in rows[1]["error"]
    report = (output / "results.md").read_text()
    assert "| Dfd | lite-quick | demo | 1 | 1 |" in report
    assert rows[1]["variant"] == 'dfd_lite+{"no_such_argument":1}'
    assert "Failed jobs" in report

    # Resume: finished jobs are not run again; only the failed one is retried.
    calls = []
    monkeypatch.setattr(runner, "run_job", lambda job, out, t: calls.append(job) or {**job, "status": "failed"})
    runner.run_grid(path)
    assert [c["overrides"] for c in calls] == [broken["overrides"]]
    assert runner.read_rows(output / "results.csv")[0]["status"] == "ok"


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
