"""Development vs test correlation: configurations paired across splits, seed means, Spearman per dataset."""

from __future__ import annotations

from pathlib import Path

import pytest

from anomalib_fewshot.benchmark import store
from anomalib_fewshot.errors import InvalidArgumentError
from research import branch_pairs, correlate
from tests.helpers import write_fake_grid


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
    assert "| d | image_auroc | models | 3 | 1.00 |" in text
    assert (tmp_path / "out" / "scatter.png").is_file()


def _branch(job: str, branch: str, split: str, value: float, k: int = 1) -> dict[str, object]:
    return {"job": job, "variant": "v", "model": "M", "branch": branch, "dataset": "d", "k_shot": k,
            "split": split, "image_auroc": value, "pixel_auroc": value, "aupro": value}  # fmt: skip


def test_branches_are_configurations_paired_per_job_and_averaged_over_seeds(tmp_path: Path):
    rows = [_branch("j0", "a", "dev", 0.6), _branch("j0", "a", "test", 0.5), _branch("j1", "a", "dev", 0.8),
            _branch("j1", "a", "test", 0.7), _branch("j2", "a", "dev", 0.1),  # j2: no test row, left out
            _branch("j0", "b", "dev", 0.9), _branch("j0", "b", "test", 0.8),
            _branch("j0", "c", "dev", 0.3), _branch("j0", "c", "test", 0.2)]  # fmt: skip
    pairs = correlate.branch_configurations([{k: str(v) for k, v in row.items()} for row in rows])
    assert [(p["model"], p["seeds"], p["dev_image_auroc"], p["test_image_auroc"]) for p in pairs] == [
        ("M:a", 2, 0.7, 0.6), ("M:b", 1, 0.9, 0.8), ("M:c", 1, 0.3, 0.2)]  # fmt: skip
    store.write_rows(tmp_path / "branches.csv", rows)
    dev = [_row("A", 1, 0, "dev", 0.6), _row("B", 1, 0, "dev", 0.9), _row("C", 1, 0, "dev", 0.7)]
    test = [_row("A", 1, 0, "test", 0.9), _row("B", 1, 0, "test", 0.6), _row("C", 1, 0, "test", 0.7)]
    store.write_rows(tmp_path / "dev.csv", dev)
    store.write_rows(tmp_path / "test.csv", test)
    text = correlate.correlate(tmp_path / "dev.csv", tmp_path / "test.csv", tmp_path / "out", tmp_path / "branches.csv")
    assert "| d | image_auroc | models | 3 | -1.00 |" in text
    assert "| d | image_auroc | branches | 3 | 1.00 |" in text
    assert "| d | image_auroc | both | 6 |" in text
    assert len(store.read_rows(tmp_path / "out" / "pairs.csv")) == 6


class _FakeModel:
    few_shot_record = None

    @classmethod
    def load_from_checkpoint(cls, path, **kwargs):
        return cls()

    def eval(self):
        return self


def test_branch_pairs_scores_each_finished_dev_job_on_both_splits_and_resumes(tmp_path: Path, monkeypatch):
    path = write_fake_grid(tmp_path, evaluate_on="dev", jobs_dir=str(tmp_path / "jobs"))
    rows = [{"model": "Dfd", "variant": "v", "dataset": "d", "k_shot": 1, "seed": s, "split": "dev", "status": st}
            for s, st in ((0, "ok"), (1, "ok"), (2, "failed"))]  # fmt: skip
    store.write_rows(tmp_path / "out" / "results.csv", rows)
    (tmp_path / "jobs" / "Dfd_v_d_1_0_dev" / "w").mkdir(parents=True)
    (tmp_path / "jobs" / "Dfd_v_d_1_0_dev" / "w" / "model.ckpt").write_bytes(b"")  # seed 1 has no checkpoint
    calls = []

    def fake_rows(spec, model, root, category, checkpoint, dataset):
        calls.append((str(root), category, Path(checkpoint).name, dataset))
        return [{"model": "Dfd", "branch": "g", "split": "dev" if "dev_root" in str(root) else "test",
                 "dataset": dataset, "k_shot": 1, "image_auroc": 0.5}], ""  # fmt: skip

    spec = type("Spec", (), {"name": "Dfd", "model_class": _FakeModel})
    monkeypatch.setattr(branch_pairs, "BRANCHES", {"Dfd": spec})
    monkeypatch.setattr(branch_pairs, "branch_rows", fake_rows)
    monkeypatch.setattr(branch_pairs, "ensure_dev_splits", lambda config, names: {"d": tmp_path / "dev_root"})
    csv_path = branch_pairs.branch_pairs(path, tmp_path / "b")
    assert calls == [
        (str(tmp_path / "dev_root"), "c", "model.ckpt", "d"),
        (str(Path("x").resolve()), "c", "model.ckpt", "d"),
    ]
    written = store.read_rows(csv_path)
    assert [(r["job"], r["split"]) for r in written] == [("Dfd_v_d_1_0_dev", "dev"), ("Dfd_v_d_1_0_dev", "test")]
    # the job's seeds travel with its branch rows (research.seed_spread groups a branch over training seeds)
    assert {(r["seed"], r["train_seed"]) for r in written} == {("0", "0")}
    branch_pairs.branch_pairs(path, tmp_path / "b")  # resumes: nothing left to score
    assert len(calls) == 2
    (tmp_path / "t").mkdir()
    with pytest.raises(InvalidArgumentError, match="evaluate_on: dev"):
        branch_pairs.branch_pairs(write_fake_grid(tmp_path / "t"), tmp_path / "b")
    with pytest.raises(InvalidArgumentError, match="--splits"):
        branch_pairs.branch_pairs(path, tmp_path / "b", splits=("valid",))


def test_branch_pairs_dev_only_reads_no_test_image(tmp_path: Path, monkeypatch):
    path = write_fake_grid(tmp_path, evaluate_on="dev", jobs_dir=str(tmp_path / "jobs"))
    store.write_rows(tmp_path / "out" / "results.csv",
                     [{"model": "Dfd", "variant": "v", "dataset": "d", "k_shot": 1, "seed": 0, "split": "dev",
                       "status": "ok"}])  # fmt: skip
    (tmp_path / "jobs" / "Dfd_v_d_1_0_dev").mkdir(parents=True)
    (tmp_path / "jobs" / "Dfd_v_d_1_0_dev" / "model.ckpt").write_bytes(b"")
    roots = []

    def fake_rows(spec, model, root, category, checkpoint, dataset):
        roots.append(str(root))
        return [{"model": "Dfd", "branch": "g", "split": "dev", "dataset": dataset, "k_shot": 1}], ""

    monkeypatch.setattr(branch_pairs, "BRANCHES", {"Dfd": type("Spec", (), {"model_class": _FakeModel})})
    monkeypatch.setattr(branch_pairs, "branch_rows", fake_rows)
    monkeypatch.setattr(branch_pairs, "ensure_dev_splits", lambda config, names: {"d": tmp_path / "dev_root"})
    branch_pairs.branch_pairs(path, tmp_path / "b", splits=("dev",))
    branch_pairs.branch_pairs(path, tmp_path / "b", splits=("dev",))  # resumes
    assert roots == [str(tmp_path / "dev_root")]
