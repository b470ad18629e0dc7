"""research.paper_anchor: our test-split image AUROC beside PCSNet's published per-category number at the same k."""

from __future__ import annotations

from pathlib import Path

import pytest

from anomalib_fewshot.benchmark import store
from research import paper_anchor


def _row(model: str, dataset: str, k: int, seed: int, auroc: str, **extra: str) -> dict:
    return {"model": model, "variant": "", "dataset": dataset, "k_shot": str(k), "seed": str(seed), "split": "test",
            "status": "ok", "image_auroc": auroc, **extra}  # fmt: skip


def test_ours_sit_beside_the_paper_at_the_same_k(tmp_path: Path):
    rows = [
        _row("Pcsnet", "mvtec_screw", 2, 0, "0.50"), _row("Pcsnet", "mvtec_screw", 2, 1, "0.60"),
        _row("Pcsnet", "mvtec_screw", 1, 0, "0.55"),  # no paper number at k = 1
        _row("Pcsnet", "mvtec_screw", 2, 2, "0.99", status="failed"),  # failed rows and
        _row("Pcsnet", "mvtec_screw", 2, 0, "0.99", split="dev"),  # the development split stay out
        _row("Pcsnet", "magnetic_tile", 2, 0, "0.70"),  # not in the paper's table
        _row("Patchcore", "mvtec_bottle", 4, 0, "1.0"),
    ]  # fmt: skip
    records = {(r["model"], r["dataset"], r["k_shot"]): r for r in paper_anchor.anchor(rows)}
    expected = {("Pcsnet", "mvtec_screw", 2), ("Pcsnet", "mvtec_screw", 1), ("Patchcore", "mvtec_bottle", 4)}
    assert set(records) == expected
    screw = records["Pcsnet", "mvtec_screw", 2]
    assert screw["runs"] == 2 and screw["mean"] == pytest.approx(55.0) and screw["std"] == pytest.approx(7.0711, 1e-4)
    assert screw["paper"] == (48.2, 2.5) and screw["minus_paper"] == pytest.approx(6.8)
    assert records["Pcsnet", "mvtec_screw", 1]["paper"] is None
    assert records["Patchcore", "mvtec_bottle", 4]["minus_paper"] == pytest.approx(0.1)
    store.write_rows(tmp_path / "results.csv", rows)
    paper_anchor.main([str(tmp_path / "results.csv"), "--output", str(tmp_path / "out")])
    text = (tmp_path / "out" / "paper_anchor.md").read_text()
    assert "| mvtec_screw | 2 | Pcsnet | – | 2 | 55.0 ± 7.1 | 48.2 ± 2.5 | +6.8 |" in text
    assert "| mvtec_screw | 1 | Pcsnet | – | 1 | 55.0 | – | – |" in text
    assert "WideResNet-50" in text and "EfficientNet-Lite0" in text  # the backbone difference said plainly


def test_a_missing_results_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit):
        paper_anchor.main([str(tmp_path / "nope.csv")])
    assert "nope.csv" in capsys.readouterr().err
