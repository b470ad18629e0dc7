"""``research.families``: which defect families rank the models like real defects, and the mix chosen from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from anomalib_fewshot.benchmark import store
from anomalib_fewshot.data.defects import FAMILIES
from research import families

# Real image AUROC of four models; "scratch" ranks them as the real defects do, "blob" in reverse, the other
# families are flat (no ranking at all); the pooled split ranks them in reverse too.
REAL = {"A": 0.9, "B": 0.8, "C": 0.7, "D": 0.6}


def _rows(dataset: str, k: int, reverse_scratch: bool = False) -> tuple[list[dict], list[dict]]:
    dev, test = [], []
    for rank, (model, real) in enumerate(REAL.items()):
        scratch = 0.9 - 0.1 * rank
        row = {"model": model, "variant": "", "dataset": dataset, "k_shot": k, "seed": 0, "status": "ok",
               "image_auroc": 0.5 + 0.1 * rank, "pixel_auroc": 0.9, "aupro": 0.5}  # fmt: skip
        for family in FAMILIES:
            row[f"image_auroc@{family}"] = 0.7
        row["image_auroc@scratch"] = 1.5 - scratch if reverse_scratch else scratch
        row["image_auroc@blob"] = 0.5 + 0.1 * rank
        dev.append({**row, "split": "dev"})
        test.append({**row, "split": "test", "image_auroc": real})
    return dev, test


def _write(tmp_path: Path, cells: list[tuple[str, int, bool]]) -> tuple[Path, Path]:
    dev, test = [], []
    for dataset, k, reverse in cells:
        d, t = _rows(dataset, k, reverse)
        dev += d
        test += t
    store.write_rows(tmp_path / "dev.csv", dev)
    store.write_rows(tmp_path / "test.csv", test)
    return tmp_path / "dev.csv", tmp_path / "test.csv"


def test_each_family_is_correlated_per_dataset_and_k_and_the_best_mix_is_chosen(tmp_path: Path):
    dev, test = _write(tmp_path, [("d1", 1, False), ("d1", 4, False), ("d2", 1, False)])
    text = families.families(dev, [test], tmp_path / "out")
    table = {(r["dataset"], r["k_shot"]): r for r in store.read_rows(tmp_path / "out" / "families.csv")}
    assert float(table[("d1", "1")]["scratch"]) == pytest.approx(1.0)
    assert float(table[("d1", "1")]["blob"]) == pytest.approx(-1.0)
    assert float(table[("d1", "1")]["all"]) == pytest.approx(-1.0)
    assert table[("d1", "1")]["blur"] == ""  # a flat family ranks nothing: no correlation
    # scratch alone ranks perfectly; the flat families change no ranking, so the tie goes to the broader mix
    assert "Chosen mix (highest mean; ties: more families): **scratch+blur+shift+foreign**" in text
    # a mix is the mean of its families: scratch + blob cancel out into a constant
    pair = families.family_pairs(dev, [test])[0]
    assert families.mix_value(pair, ("scratch", "blob")) == pytest.approx(0.7)
    assert families.mix_value(pair, (families.ALL,)) == pair["dev_image_auroc"]


def test_ties_go_to_the_broader_mix():
    grouped = {("d", 1): [{"test_image_auroc": real, **{f"dev_image_auroc@{f}": real for f in FAMILIES}}
                          for real in REAL.values()]}  # fmt: skip
    assert families.choose_mix(grouped) == FAMILIES  # every family ranks perfectly: all of them


def test_a_dataset_left_out_is_scored_with_the_mix_chosen_without_it(tmp_path: Path):
    # on d2 scratch ranks the models in reverse: the mix chosen on d1 alone (scratch and flat ones) scores -1 there
    dev, test = _write(tmp_path, [("d1", 1, False), ("d2", 1, True)])
    held = {r["dataset"]: r for r in families.leave_one_dataset_out(families.cells(families.family_pairs(dev, [test])))}
    assert held["d2"]["mix"] == "scratch+blur+shift+foreign"
    assert held["d2"]["spearman"] == pytest.approx(-1.0)
    assert held["d1"]["mix"] != held["d2"]["mix"]
    # left out, the mix does no better than the pooled split (-1 each on d2): the pooled split stays
    assert "**keep the pooled split**" in families.families(dev, [test], tmp_path / "out")


def test_no_paired_cell_is_a_clear_error(tmp_path: Path):
    dev, test = _write(tmp_path, [("d1", 1, False)])
    store.write_rows(test, [])
    with pytest.raises(ValueError, match="nothing to choose a mix from"):
        families.families(dev, [test], tmp_path / "out")
