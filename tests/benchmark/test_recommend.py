"""``anomalib-fewshot recommend``: a folder of good images -> development split -> ranked models, within a budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anomalib_fewshot import cli
from anomalib_fewshot.benchmark import recommend
from anomalib_fewshot.data.defects import FAMILIES
from anomalib_fewshot.errors import InvalidArgumentError


def _good_images(folder: Path, n: int, size: int = 64) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        base = np.full((size, size, 3), 120, np.uint8)
        base[:, : size // 2] = 90
        noise = rng.integers(0, 25, (size, size, 3), dtype=np.uint8)
        Image.fromarray(base + noise).save(folder / f"img_{i:03d}.png")
    return folder


MIX = ("scratch", "blob")


def _row(model: str, pooled: float, mixed: float, other: float) -> dict[str, str]:
    """A result row whose families in :data:`MIX` score ``mixed`` and every other family ``other``."""
    row = {"model": model, "k_shot": "1", "status": "ok", "image_auroc": str(pooled), "pixel_auroc": "0.9",
           "aupro": "0.5"}  # fmt: skip
    for family in FAMILIES:
        row[f"image_auroc@{family}"] = str(mixed if family in MIX else other)
    return row


def test_models_are_ranked_by_the_pooled_split_or_by_a_family_mix():
    # A wins on the pooled split (and on the families outside the mix); B wins on the mix's families
    rows = [_row("A", pooled=0.95, mixed=0.70, other=0.99), _row("B", pooled=0.80, mixed=0.75, other=0.50)]
    assert recommend.RANKING_FAMILIES == ()  # the evidence kept the pooled split (research.families)
    assert [r["model"] for r in recommend._ranked(rows)] == ["A", "B"]
    assert [r["model"] for r in recommend._ranked(rows, MIX)] == ["B", "A"]
    assert recommend.ranking_score(rows[1], MIX) == pytest.approx(0.75)
    table = recommend.format_table(recommend._ranked(rows))
    assert "| 1 | A | 1 | 0.950 | 0.900 | 0.500 |" in table  # no ranking column: the pooled split ranks
    assert recommend.RANKING_RULE in table.replace("\n", " ") and "screw +0.30" in table.replace("\n", " ")
    del rows[0]["image_auroc@blob"]
    with pytest.raises(InvalidArgumentError, match=r"A k=1: no image_auroc .*blob"):
        recommend._ranked(rows, MIX)


def test_bad_requests_are_refused_before_any_work(tmp_path: Path):
    images = _good_images(tmp_path / "good", 22)
    with pytest.raises(InvalidArgumentError, match=r"at least max\(k\) \+ 20 = 24"):
        recommend.recommend(images, tmp_path / "out", ["Patchcore"], [1, 4])
    with pytest.raises(InvalidArgumentError, match="unknown"):
        recommend.recommend(images, tmp_path / "out", ["Nope"], [1])
    with pytest.raises(InvalidArgumentError, match="inside the image folder"):
        recommend.recommend(images, images / "out", ["Patchcore"], [1])
    assert not (tmp_path / "out").exists()
    assert cli.main(["recommend", "--images", str(images), "--output", str(tmp_path / "o"), "--k", "8"]) == 2


def test_an_estimate_over_the_budget_stops_before_running(tmp_path: Path, monkeypatch):
    images = _good_images(tmp_path / "good", 30)
    monkeypatch.setattr(recommend, "estimate_job_s", lambda model, k, n_dev: 600.0 if model == "Pcsnet" else 60.0)
    monkeypatch.setattr("anomalib_fewshot.benchmark.runner.run_grid", lambda *a, **k: pytest.fail("ran a job"))
    with pytest.raises(InvalidArgumentError, match=r"exceed --budget-min 5: .* slowest is Pcsnet at k=1"):
        recommend.recommend(images, tmp_path / "out", ["Pcsnet", "Patchcore"], [1], budget_min=5)
    # the development split was built from the folder, which was not touched
    assert sorted(p.name for p in images.iterdir()) == [f"img_{i:03d}.png" for i in range(30)]
    assert (tmp_path / "out" / "dev").is_dir()


@pytest.mark.slow
def test_the_estimate_times_a_model_on_this_machine():
    seconds = recommend.estimate_job_s("Pcsnet", 1, n_dev=10, repeats=1)
    assert recommend.EXPORT_ALLOWANCE_S < seconds < 3600


@pytest.mark.slow
def test_recommend_ranks_models_on_a_folder_of_good_images(tmp_path: Path, capsys):
    images = _good_images(tmp_path / "good", 24)
    rows = recommend.recommend(images, tmp_path / "out", ["Patchcore"], [1, 2], budget_min=60, cap=12)
    assert [r["model"] for r in rows] == ["Patchcore", "Patchcore"]
    assert sorted(r["k_shot"] for r in rows) == ["1", "2"]
    assert {r["split"] for r in rows} == {"dev"}
    out = capsys.readouterr().out
    assert "estimated total:" in out
    assert "| 1 | Patchcore |" in out
    assert "SYNTHETIC defects" in out
