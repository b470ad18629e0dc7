"""``research.decisions``: threshold rules applied to a job's decision scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from research import decisions


def _record() -> dict:
    # good images score 1-3, defects 5-7; the shot's views score lower (0-1) than new good images
    return {
        "job": {"model": "M", "variant": "v", "dataset": "d", "k_shot": 1, "seed": 0},
        "scores": [1.0, 2.0, 3.0, 5.0, 6.0, 7.0],
        "labels": [0, 0, 0, 1, 1, 1],
        "views": {"mild": {"normal": [0.0, 0.5, 1.0], "defect": [8.0, 9.0, 10.0]}},
    }


def test_rules_give_their_thresholds_and_the_decision_against_the_oracle():
    rows = {row["rule"]: row for row in decisions.evaluate(_record())}
    assert set(rows) == {f"{rule}@mild" for rule in decisions.RULES}
    assert rows["max@mild"]["threshold"] == 1.0 and rows["max@mild"]["fpr"] == pytest.approx(2 / 3, abs=1e-4)
    assert rows["f1@mild"]["threshold"] == pytest.approx(4.5)  # midway between 1 and 8
    assert rows["f1@mild"]["f1"] == 1.0 and rows["f1@mild"]["gap"] == 0.0
    assert rows["halfway@mild"]["threshold"] == pytest.approx(5.0)  # (1 + 9) / 2: misses the defect at 5
    assert rows["halfway@mild"]["tpr"] == pytest.approx(2 / 3, abs=1e-4)
    assert rows["max@mild"]["f1max"] == 1.0


def test_the_oracle_is_the_best_threshold():
    assert decisions.f1max(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.8)


def test_the_summary_is_recomputed_from_a_committed_scores_file(tmp_path: Path):
    scores = tmp_path / "decision_scores.json"
    scores.write_text(json.dumps({"M//d/1/0/dev": _record()}))
    assert decisions.main(["--scores", str(scores), "--output", str(tmp_path / "out")]) == 0
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| all | f1@mild | 1 | 0.000 |" in summary
