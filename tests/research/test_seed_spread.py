"""research.seed_spread: the spread over training seeds with the shots fixed, flagged above 0.02."""

from __future__ import annotations

from pathlib import Path

import pytest

from anomalib_fewshot.benchmark import store
from research import seed_spread


def _row(model: str, train_seed: int | None, auroc: float) -> dict:
    row = {"model": model, "variant": "v", "dataset": "d", "k_shot": "1", "seed": "0", "split": "test",
           "status": "ok", "image_auroc": str(auroc), "pixel_auroc": "0.9", "aupro": ""}  # fmt: skip
    if train_seed is not None:
        row["train_seed"] = str(train_seed)
    return row


def test_the_spread_is_over_training_seeds_with_the_shots_fixed(tmp_path: Path):
    rows = [_row("A", None, 0.80), _row("A", 1, 0.90), _row("A", 2, 0.70),  # seed 0's older row: train seed 0
            {**_row("B", 0, 0.60), "aupro": "0.5"}, {**_row("B", 1, 0.61), "aupro": "0.5"},
            {**_row("B", 2, 0.1), "status": "failed"},
            {**_row("A", 0, 0.5), "seed": "1"}]  # fmt: skip  # another shot draw: its own group (one seed)
    records = {r["model"]: r for r in seed_spread.spread(rows)}
    assert set(records) == {"A", "B"}
    a, b = records["A"], records["B"]
    assert a["train_seeds"] == ["0", "1", "2"] and b["train_seeds"] == ["0", "1"]
    mean, std, spread_range = a["image_auroc"]
    assert mean == pytest.approx(0.8) and std == pytest.approx(0.1) and spread_range == pytest.approx(0.2)
    assert a["flagged"] == ["image_auroc"] and b["flagged"] == [] and "aupro" not in a
    store.write_rows(tmp_path / "results.csv", rows)
    seed_spread.main([str(tmp_path / "results.csv"), "--output", str(tmp_path / "out")])
    text = (tmp_path / "out" / "spread.md").read_text()
    assert "| A | v | d | 1 | 0 | test | 0, 1, 2 | 0.800 ± 0.100 [0.200] | 0.900 ± 0.000 [0.000] | – |" in text
    assert "| image_auroc |" in text and "| no |" in text  # A flagged, B not


def test_a_branches_csv_is_spread_per_branch(tmp_path: Path):
    """research.branch_pairs rows (no status column, a branch column) group per branch over training seeds."""
    values = {"raw": (0.7, 0.7), "head": (0.6, 0.8)}
    rows = [{"model": "Fdsl", "variant": "v", "branch": branch, "dataset": "d", "k_shot": "1", "seed": "0",
             "train_seed": str(ts), "split": "dev", "image_auroc": str(value), "pixel_auroc": "0.9"}
            for branch, pair in values.items() for ts, value in enumerate(pair)]  # fmt: skip
    records = {r["branch"]: r for r in seed_spread.spread(rows)}
    assert records["raw"]["image_auroc"][1:] == (0.0, 0.0) and records["raw"]["flagged"] == []
    assert records["head"]["image_auroc"][2] == pytest.approx(0.2) and records["head"]["flagged"] == ["image_auroc"]
    store.write_rows(tmp_path / "branches.csv", rows)
    seed_spread.main([str(tmp_path / "branches.csv"), "--output", str(tmp_path / "out")])
    text = (tmp_path / "out" / "spread.md").read_text()
    header = "| variant | branch | dataset | k | shots seed | split | training seeds | image_auroc | pixel_auroc |"
    assert header in text  # no column for metrics a branches.csv lacks (image_f1 ...)
    assert "| head | d | 1 | 0 | dev | 0, 1 | 0.700 ± 0.141 [0.200] | 0.900 ± 0.000 [0.000] | image_auroc |" in text
