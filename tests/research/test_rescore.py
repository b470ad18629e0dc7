"""Rescoring a development grid's checkpoints with inference-only switches (``research.rescore``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from anomalib_fewshot.benchmark import store
from anomalib_fewshot.errors import InvalidArgumentError
from research import rescore
from tests.helpers import write_fake_grid


class _Net:
    def __init__(self) -> None:
        self.score_mode = "mean"
        self.weight = 0.5


class _FakeModel:
    def __init__(self) -> None:
        self.model = _Net()

    @classmethod
    def load_from_checkpoint(cls, path, **kwargs):
        return cls()

    def eval(self):
        return self


def _grid(tmp_path: Path) -> Path:
    path = write_fake_grid(tmp_path, evaluate_on="dev", jobs_dir=str(tmp_path / "jobs"))
    rows = [{"model": "Dfd", "variant": "v", "dataset": "d", "k_shot": 1, "seed": s, "split": "dev", "status": st,
             "profile": "p", "dev_generator": "gen-1", "shots": f"[\"{s}.png\"]"}
            for s, st in ((0, "ok"), (1, "ok"), (2, "failed"))]  # fmt: skip
    store.write_rows(tmp_path / "out" / "results.csv", rows)
    (tmp_path / "jobs" / "Dfd_v_d_1_0_dev" / "w").mkdir(parents=True)
    (tmp_path / "jobs" / "Dfd_v_d_1_0_dev" / "w" / "model.ckpt").write_bytes(b"")  # seed 1 has no checkpoint
    return path


def test_rescore_applies_each_variant_to_the_torch_module_and_resumes(tmp_path: Path, monkeypatch):
    path = _grid(tmp_path)
    calls = []

    def fake_score(model, root, category):
        calls.append((model.model.score_mode, model.model.weight, str(root), category))
        return {"image_auroc": 0.9 if model.model.score_mode == "map_max" else 0.8, "pixel_auroc": 0.7, "aupro": 0.6}

    monkeypatch.setattr(rescore, "REGISTRY", {"Dfd": type("Spec", (), {"model_class": _FakeModel})})
    monkeypatch.setattr(rescore, "score_checkpoint", fake_score)
    monkeypatch.setattr(rescore, "ensure_dev_splits", lambda config, names: {"d": tmp_path / "dev_root"})
    out = tmp_path / "r" / "results.csv"
    variants = ["max:score_mode=map_max", "w:weight=0.25:score_mode=score"]
    rescore.rescore(path, out, ["Dfd"], variants)
    dev_root = str(tmp_path / "dev_root")
    assert calls == [("map_max", 0.5, dev_root, "c"), ("score", 0.25, dev_root, "c")]  # a fresh model per variant
    rows = store.read_rows(out)
    assert [(r["variant"], r["seed"], r["split"], r["image_auroc"]) for r in rows] == [
        ("v-max", "0", "dev", "0.9"),
        ("v-w", "0", "dev", "0.8"),
    ]
    assert rows[1]["switches"] == "{score_mode: score, weight: 0.25}"
    provenance = (rows[0]["rescored_from"], rows[0]["dev_generator"], rows[0]["shots"])
    assert provenance == ("Dfd_v_d_1_0_dev", "gen-1", '["0.png"]')
    rescore.rescore(path, out, ["Dfd"], variants)  # resumes: nothing left
    assert len(calls) == 2


def test_rescore_refuses_unknown_switches_bad_variants_and_test_grids(tmp_path: Path, monkeypatch):
    path = _grid(tmp_path)
    monkeypatch.setattr(rescore, "REGISTRY", {"Dfd": type("Spec", (), {"model_class": _FakeModel})})
    monkeypatch.setattr(rescore, "ensure_dev_splits", lambda config, names: {"d": tmp_path / "dev_root"})
    with pytest.raises(InvalidArgumentError, match="--variant typo: _Net has no attribute 'scor_mode'"):
        rescore.rescore(path, tmp_path / "r.csv", ["Dfd"], ["typo:scor_mode=map_max"])
    for bad in ("name_only", ":score_mode=x", "n:score_mode"):
        with pytest.raises(InvalidArgumentError, match="NAME:ATTR=VALUE"):
            rescore.parse_variant(bad)
    assert rescore.parse_variant("n:a=true:b=0.5:c=map_max") == ("n", {"a": True, "b": 0.5, "c": "map_max"})
    (tmp_path / "t").mkdir()
    with pytest.raises(InvalidArgumentError, match="evaluate_on: dev"):
        rescore.rescore(write_fake_grid(tmp_path / "t"), tmp_path / "r.csv", ["Dfd"], ["n:a=1"])


def test_a_dotted_switch_sets_an_attribute_of_a_submodule():
    model = _FakeModel()
    model.model.image_score = _Net()  # a submodule with its own attributes (as the model's ImageScore)
    rescore.apply_switches(model, {"image_score.score_mode": "max", "weight": 0.1}, "--variant n")
    assert model.model.image_score.score_mode == "max" and model.model.weight == 0.1
    assert model.model.score_mode == "mean"  # the parent's attribute of the same name is untouched
    for bad in ("image_score.rule", "nothing.score_mode"):
        with pytest.raises(InvalidArgumentError, match=f"--variant n: _Net has no attribute '{bad}'"):
            rescore.apply_switches(model, {bad: 1}, "--variant n")
