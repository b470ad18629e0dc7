"""``research.score_rules``: the image-score rules of ``ImageScore`` compared on a development grid's checkpoints."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from anomalib_fewshot.benchmark import store
from anomalib_fewshot.components.nn.scoring import IMAGE_SCORES
from research import branch_pairs, score_rules
from tests.helpers import write_fake_grid

SIZE = 32


class _FakeModel:
    """Maps are bright in the top-left corner on every image (a highlight that moves a little with the view), and a
    defect adds a smaller spot elsewhere: the map's maximum ranks by the highlight, the standardised map by the spot."""

    hparams = SimpleNamespace(few_shot_seed=0)

    @classmethod
    def load_from_checkpoint(cls, path, **kwargs):
        return cls()

    def eval(self):
        return self

    def calibration_images(self) -> tuple[torch.Tensor, bool]:
        return torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)), False

    def score_raw(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = _maps(images.mean((1, 2, 3)) * 10, torch.zeros(len(images)))
        return maps.flatten(1).amax(1), maps


def _maps(highlight: torch.Tensor, spot: torch.Tensor) -> torch.Tensor:
    """Raw maps in the hundreds, as PCSNet's are (a sigmoid-squashed AUROC would see them all tied)."""
    maps = torch.zeros(len(highlight), SIZE, SIZE)
    maps[:, :3, :3] = highlight[:, None, None]
    maps[:, 10, 10] = spot
    return 100 * maps


def test_each_rule_is_scored_on_the_split_and_calibrated_on_its_own_scores(monkeypatch):
    labels = np.array([0, 0, 0, 1, 1, 1])
    highlight = torch.tensor([6.0, 5.0, 4.0, 3.0, 4.5, 5.5])  # unrelated to the label
    maps = _maps(highlight, torch.tensor([0.0, 0.0, 0.0, 2.0, 2.0, 2.0]))
    split = (maps.flatten(1).amax(1), maps, labels)
    monkeypatch.setattr(score_rules, "split_maps", lambda model, root, category: split)
    rows = {row["rule"]: row for row in score_rules.job_rows(_FakeModel(), Path("root"), "c")}
    assert set(rows) == set(IMAGE_SCORES)
    assert rows["max"]["image_auroc"] == rows["model"]["image_auroc"] < 0.7  # the highlight decides
    assert rows["z"]["image_auroc"] == 1.0 and rows["resid"]["image_auroc"] == 1.0  # the spot decides
    for row in rows.values():
        assert 0 <= row["gap"] <= 1 and row["gap"] == round(row["image_f1max"] - row["image_f1"], 4)


def test_the_auroc_ranks_raw_scores_of_any_scale():
    # raw scores in the hundreds (PCSNet's): a sigmoid would tie them all at 1 and report 0.5
    labels = np.array([0, 0, 1, 1])
    assert score_rules.image_auroc(np.array([200.0, 210.0, 220.0, 230.0]), labels) == 1.0
    assert score_rules.image_auroc(np.array([230.0, 210.0, 220.0, 200.0]), labels) == 0.25


def test_the_grid_loop_resumes_and_summarises_against_patchcore(tmp_path: Path, monkeypatch):
    path = write_fake_grid(tmp_path, evaluate_on="dev", jobs_dir=str(tmp_path / "jobs"))
    rows = [{"model": m, "variant": "v" if m == "Dfd" else "", "dataset": "d", "k_shot": 1, "seed": 0, "split": "dev",
             "status": "ok", "profile": "p" if m == "Dfd" else "", "image_auroc": a}
            for m, a in (("Dfd", 0.8), ("Patchcore", 0.85))]  # fmt: skip
    store.write_rows(tmp_path / "out" / "results.csv", rows)
    (tmp_path / "jobs" / "Dfd_v_d_1_0_dev" / "w").mkdir(parents=True)
    (tmp_path / "jobs" / "Dfd_v_d_1_0_dev" / "w" / "model.ckpt").write_bytes(b"")
    calls = []

    def fake_rows(model, root, category):
        calls.append(category)
        return [{"rule": r, "image_auroc": 0.9 if r == "z" else 0.8, "image_f1max": 0.9, "image_f1": 0.88,
                 "gap": 0.02, "image_fpr": 0.1, "image_tpr": 0.9} for r in IMAGE_SCORES]  # fmt: skip

    monkeypatch.setattr(score_rules, "REGISTRY", {"Dfd": SimpleNamespace(model_class=_FakeModel)})
    monkeypatch.setattr(score_rules, "job_rows", fake_rows)
    monkeypatch.setattr(branch_pairs, "ensure_dev_splits", lambda config, names: {"d": tmp_path / "dev_root"})
    out = tmp_path / "rules"
    score_rules.score_rules(path, out)
    score_rules.score_rules(path, out)  # resumes: the job is not scored again
    assert calls == ["c"]
    written = store.read_rows(out / "rules.csv")
    assert [(r["job"], r["rule"]) for r in written] == [("Dfd_v_d_1_0_dev", r) for r in IMAGE_SCORES]
    summary = (out / "summary.md").read_text()
    assert "| Dfd | z | 1 | 0.900 | 1/1 | 0.020 | 1/1 |" in summary  # at or above Patchcore's 0.85
    assert "| Dfd | max | 1 | 0.800 | 0/1 |" in summary


def test_a_rule_replaces_the_models_own_only_when_it_wins_paired_on_most_jobs():
    def row(job, rule, auroc, gap=0.05):
        return {"job": job, "model": "M", "dataset": job, "k_shot": 1, "seed": 0, "rule": rule,
                "image_auroc": auroc, "gap": gap}  # fmt: skip

    # "resid" wins the mean on one large gain but loses the other jobs; "max" wins every job by a little
    rows = [row(j, "model", 0.80) for j in "abcdef"]
    rows += [row("a", "resid", 0.99)] + [row(j, "resid", 0.79) for j in "bcdef"]
    rows += [row(j, "max", 0.81) for j in "abcdef"]
    assert score_rules.choose(rows, {}) == {"M": "max"}
    # a larger mean gap disqualifies it
    wider = [r if r["rule"] != "max" else {**r, "gap": 0.06} for r in rows]
    assert score_rules.choose(wider, {}) == {"M": "model"}
    # fewer jobs at or above Patchcore disqualify it (here it loses one job to the own score, 5/6 still wins)
    below = [r if r["rule"] != "max" or r["job"] != "a" else {**r, "image_auroc": 0.79} for r in rows]
    assert score_rules.choose(below, {}) == {"M": "max"}
    assert score_rules.choose(below, {(j, "1", "0"): 0.80 for j in "abcdef"}) == {"M": "model"}
