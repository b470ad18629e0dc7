"""research.recalibration: a fit's threshold re-drawn offline, the FPR spread split into calibration draw and refit."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from anomalib_fewshot.benchmark import job as job_module
from anomalib_fewshot.benchmark import store
from anomalib_fewshot.errors import InvalidArgumentError
from research import branch_pairs, recalibration
from tests.helpers import write_fake_grid


def test_decision_is_score_above_threshold():
    scores, labels = np.array([0.1, 0.5, 0.9, 0.3]), np.array([0, 0, 1, 1])
    assert recalibration.decision(scores, labels, 0.4) == {"fpr": 0.5, "tpr": 0.5, "f1": 0.5}
    assert recalibration.decision(scores, labels, 0.5) == {"fpr": 0.0, "tpr": 0.5, "f1": pytest.approx(2 / 3)}


def _rec(fit: int, seed: int, fpr: float) -> dict[str, object]:
    return {"model": "M", "variant": "v", "dataset": "d", "k_shot": 1, "seed": 0, "views": 32, "train_seed": fit,
            "calibration_seed": seed, "fpr": fpr, "tpr": 0.5}  # fmt: skip


def test_summary_separates_the_calibration_draw_from_the_refit():
    # the FPR follows the calibration seed only: all draw, no refit; shipped (own seed) moves with the draw
    rows = [_rec(0, 0, 0.1), _rec(0, 1, 0.5), _rec(1, 0, 0.1), _rec(1, 1, 0.5)]
    line = recalibration.summary(rows, Path("r.csv")).splitlines()[-1]
    assert line == "| M | v | d | 1 | 0 | 32 | 2 | 0, 1 | 0.283 | 0.000 | 0.283 | 0.300 | 0.500 |"
    # the FPR follows the fit only
    rows = [_rec(0, 0, 0.1), _rec(0, 1, 0.1), _rec(1, 0, 0.5), _rec(1, 1, 0.5)]
    assert "| 2 | 0, 1 | 0.000 | 0.283 | 0.283 |" in recalibration.summary(rows, Path("r.csv"))


class _Fitted:
    """A checkpoint's model: its shots, its shipped threshold."""

    shots = ["/data/train/good/000.png"]

    def __init__(self) -> None:
        self.few_shot_record = {"shots": self.shots}
        self.post_processor = SimpleNamespace(_image_threshold=torch.tensor(0.35))

    @classmethod
    def load_from_checkpoint(cls, path, **kwargs):
        return cls()

    def eval(self):
        return self


def _setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sources: list[str]) -> tuple[Path, Path, list]:
    # a test-split grid (no evaluate_on): one shot draw fitted with training seeds 0 and 1
    grid = write_fake_grid(tmp_path, grid={"seeds": [0], "train_seeds": [0, 1]}, jobs_dir=str(tmp_path / "jobs"))
    rows = [{"model": "Dfd", "variant": "v", "dataset": "d", "k_shot": 1, "seed": 0, "train_seed": t, "split": "test",
             "status": "ok"} for t in (0, 1)]  # fmt: skip
    store.write_rows(tmp_path / "out" / "results.csv", rows)
    for name in ("Dfd_v_d_1_0", "Dfd_v_d_1_0_t1"):
        (tmp_path / "jobs" / name).mkdir(parents=True)
        (tmp_path / "jobs" / name / "model.ckpt").write_bytes(b"")
    (tmp_path / "devgrid").mkdir()
    dev_grid = write_fake_grid(tmp_path / "devgrid", evaluate_on="dev")
    dev_root = tmp_path / "dev_root"
    (dev_root / "c").mkdir(parents=True)
    (dev_root / "c" / "dev_split.json").write_text(json.dumps({"images": [{"source": s} for s in sources]}))
    monkeypatch.setattr(branch_pairs, "ensure_dev_splits", lambda config, names: {"d": dev_root})
    monkeypatch.setattr(recalibration, "REGISTRY", {"Dfd": SimpleNamespace(model_class=_Fitted)})
    scored = []

    def fake_scored(model, datamodule, pixel):
        scored.append(datamodule)
        return (np.array([0.1, 0.4, 0.6, 0.9]), None, np.array([0, 0, 1, 1]), None), {}

    monkeypatch.setattr(job_module, "scored_outputs", fake_scored)
    monkeypatch.setattr(job_module, "evaluation_datamodule", lambda model, root, category: (str(root), category))
    # threshold 0.35 at calibration seed 0, 0.5 at seed 1 (the real draw is the package's, tested with it)
    monkeypatch.setattr(recalibration, "thresholds", lambda model, seeds, views: {
        (s, v): 0.35 + 0.15 * s for s in seeds for v in views})  # fmt: skip
    return grid, dev_grid, scored


def test_recalibrate_scores_each_fit_on_the_dev_split_once_per_fit_and_resumes(tmp_path, monkeypatch):
    grid, dev_grid, scored = _setup(tmp_path, monkeypatch, ["/data/train/good/001.png"])
    out = tmp_path / "recal"
    recalibration.recalibrate(grid, dev_grid, out, seeds=(0, 1), views=(32,))
    assert scored == [(str(tmp_path / "dev_root"), "c")] * 2  # the development split, once per fit
    rows = store.read_rows(out / "recalibration.csv")
    assert [(r["job"], r["calibration_seed"], r["shipped"], r["fpr"]) for r in rows] == [
        ("Dfd_v_d_1_0", "0", "True", "0.5"), ("Dfd_v_d_1_0", "1", "False", "0.0"),
        ("Dfd_v_d_1_0_t1", "0", "False", "0.5"), ("Dfd_v_d_1_0_t1", "1", "True", "0.0"),
    ]  # fmt: skip
    assert rows[0]["shipped_threshold"] == "0.35" and rows[1]["shipped_threshold"] == ""
    assert "| Dfd | v | d | 1 | 0 | 32 | 2 | 0, 1 | 0.354 | 0.000 | 0.354 |" in (out / "summary.md").read_text()
    recalibration.recalibrate(grid, dev_grid, out, seeds=(0, 1), views=(32,))  # resumes: nothing re-scored
    assert len(scored) == 2


def test_a_fit_whose_shot_is_in_the_dev_split_is_refused(tmp_path, monkeypatch):
    grid, dev_grid, scored = _setup(tmp_path, monkeypatch, ["/data/train/good/000.png"])
    with pytest.raises(InvalidArgumentError, match=r"000\.png"):
        recalibration.recalibrate(grid, dev_grid, tmp_path / "recal")
    assert scored == []
    with pytest.raises(InvalidArgumentError, match="development grid"):  # without --dev-config: a dev grid only
        branch_pairs.finished_dev_jobs(grid, None, {"Dfd"}, "rows")
