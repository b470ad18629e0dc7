"""Development vs test correlation: configurations paired across splits, seed means, Spearman per dataset."""

from __future__ import annotations

from pathlib import Path

import pytest

from anomalib_fewshot.benchmark import correlate, store


def _row(model: str, k: int, seed: int, split: str, auroc: float, dataset: str = "d") -> dict[str, object]:
    return {"model": model, "variant": "v", "dataset": dataset, "k_shot": k, "seed": seed, "split": split,
            "status": "ok", "image_auroc": auroc, "pixel_auroc": auroc, "aupro": auroc / 2}  # fmt: skip


def test_spearman_matches_known_values():
    assert correlate.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert correlate.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert correlate.spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert correlate.spearman([1, 2], [1, 2]) is None  # too few points
    assert correlate.spearman([1, 1, 1], [1, 2, 3]) is None  # a constant side


def test_only_configurations_on_both_splits_and_common_seeds_are_paired(tmp_path: Path):
    dev = [_row("A", 1, 0, "dev", 0.6), _row("A", 1, 1, "dev", 0.8), _row("B", 1, 0, "dev", 0.9),
           _row("C", 1, 0, "dev", 0.7), _row("D", 1, 0, "dev", 0.5)]  # fmt: skip
    test = [_row("A", 1, 0, "test", 0.65), _row("B", 1, 0, "test", 0.95), _row("C", 1, 0, "test", 0.75),
            {**_row("D", 1, 0, "test", 0.1), "status": "failed"}]  # fmt: skip
    store.write_rows(tmp_path / "dev.csv", dev)
    store.write_rows(tmp_path / "test.csv", test)
    text = correlate.correlate(tmp_path / "dev.csv", tmp_path / "test.csv", tmp_path / "out")
    pairs = store.read_rows(tmp_path / "out" / "pairs.csv")
    assert [(p["model"], p["seeds"], p["dev_image_auroc"]) for p in pairs] == [
        ("A", "1", "0.6"),  # seed 1 has no test row: only seed 0 is compared
        ("B", "1", "0.9"),
        ("C", "1", "0.7"),
    ]  # D failed on test
    assert "| d | image_auroc | 3 | 1.00 |" in text
    assert (tmp_path / "out" / "scatter.png").is_file()
