"""--only and --supersede: selected jobs only, rows replaced in place, old rows archived, resumable after a kill."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from anomalib_fewshot import cli
from anomalib_fewshot.benchmark import grid, runner, store, supersede
from anomalib_fewshot.errors import InvalidArgumentError
from tests.helpers import write_fake_grid

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "benchmark" / "smoke.yaml"


@pytest.fixture(autouse=True)
def _no_plots(monkeypatch):
    """The report's plots are not under test here (matplotlib would take most of the time)."""
    monkeypatch.setattr("anomalib_fewshot.benchmark.plots.write_plots", lambda rows, output: [])


def _fake_row(job: dict[str, Any], auroc: str, status: str = "ok") -> dict[str, Any]:
    """A row as run_job returns it (the same columns every time, as one job version writes them)."""
    row = {**{f: job[f] for f in store.KEY_FIELDS}, "profile": job["profile"], "status": status, "wall_s": 1.0}
    if status == "ok":
        return {**row, "image_auroc": auroc, "openvino_ms": 12.5, "machine": "CPU X, 2 cores", "finished_utc": auroc}
    return {**row, "error": f"{status}: boom {auroc}"}


class FakeRunJob:
    """Stands in for runner.run_job: records the jobs, returns fake rows, may fail or be killed on one call."""

    def __init__(self, auroc: str, fail: set[str] | None = None, kill_at: int | None = None):
        self.auroc, self.fail, self.kill_at, self.calls = auroc, fail or set(), kill_at, []

    def __call__(self, job: dict[str, Any], jobs_dir: Path, timeout_s: float) -> dict[str, Any]:
        self.calls.append(job)
        if self.kill_at is not None and len(self.calls) == self.kill_at:
            raise KeyboardInterrupt
        expected_nan = job["model"] == "Padim" and str(job["k_shot"]) == "1"
        failed = expected_nan or store.job_label(job) in self.fail
        return _fake_row(job, self.auroc, "failed" if failed else "ok")


def _keys(calls: list[dict[str, Any]]) -> list[str]:
    return [store.job_label(job) for job in calls]


def _grid(tmp_path: Path, **extra: Any) -> Path:
    models = [{"model": "Dfd", "variant": "v", "profile": "p"}, {"model": "Patchcore"}]
    return write_fake_grid(tmp_path, models, **extra)


def _today() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d")


def test_only_runs_the_selected_model_or_variant_and_the_report_covers_the_grid(tmp_path: Path, monkeypatch):
    path = _grid(tmp_path)
    fake = FakeRunJob("0.5")
    monkeypatch.setattr(runner, "run_job", fake)
    assert runner.main(["-c", str(path), "--only", "Patchcore"]) == 0
    assert _keys(fake.calls) == ["Patchcore//d/1/0", "Patchcore//d/1/1", "Patchcore//d/1/2"]
    report = (tmp_path / "out" / "results.md").read_text()
    assert "progress: 3 of 6 jobs finished (rerun the command to resume)" in report

    fake.calls.clear()  # finished jobs are not re-run without --supersede; the variant narrows the selection
    runner.run_grid(path, only=["Patchcore", "Dfd:v"])
    assert _keys(fake.calls) == ["Dfd/v/d/1/0", "Dfd/v/d/1/1", "Dfd/v/d/1/2"]


def test_k_shot_and_seeds_narrow_the_run_and_unknown_values_list_the_grid(tmp_path: Path, monkeypatch):
    path = _grid(tmp_path)
    fake = FakeRunJob("0.5")
    monkeypatch.setattr(runner, "run_job", fake)
    assert runner.main(["-c", str(path), "--only", "Dfd", "--seeds", "1", "2", "--k-shot", "1"]) == 0
    assert _keys(fake.calls) == ["Dfd/v/d/1/1", "Dfd/v/d/1/2"]
    fake.calls.clear()
    runner.run_grid(path, seeds=[0])  # without --only: every model's seed-0 job
    assert _keys(fake.calls) == ["Dfd/v/d/1/0", "Patchcore//d/1/0"]
    with pytest.raises(InvalidArgumentError, match=r"--seeds 7: the grid has no such seed; its values: \[0, 1, 2\]"):
        runner.run_grid(path, seeds=[7])
    with pytest.raises(InvalidArgumentError, match=r"--k-shot 4: .*its values: \[1\]"):
        runner.run_grid(path, k_shots=[4])
    with pytest.raises(InvalidArgumentError, match=r"--datasets e: the grid has no such dataset; its values: \['d'\]"):
        runner.run_grid(path, datasets=["e"])
    fake.calls.clear()
    runner.run_grid(path, only=["Dfd"], datasets=["d"], seeds=[0], supersede=True, archive_dir=tmp_path / "archive")
    assert _keys(fake.calls) == ["Dfd/v/d/1/0"]


def test_only_selectors_split_at_the_first_colon_and_unknown_names_list_the_grid():
    jobs = [
        {"model": "Dfd", "variant": 'dfd_lite+{"a":1}', "dataset": "d", "k_shot": 1, "seed": 0},
        {"model": "Dfd", "variant": "quick", "dataset": "d", "k_shot": 1, "seed": 0},
        {"model": "Patchcore", "variant": "", "dataset": "d", "k_shot": 1, "seed": 0},
    ]
    assert grid.select_jobs(jobs, ['Dfd:dfd_lite+{"a":1}']) == [jobs[0]]
    assert grid.select_jobs(jobs, ["Patchcore:"]) == [jobs[2]]
    assert grid.select_jobs(jobs, ["Dfd"]) == jobs[:2]
    assert grid.select_jobs(jobs, None) == jobs
    with pytest.raises(InvalidArgumentError, match=r"no model 'Pcsnet'; its models: Dfd, Patchcore"):
        grid.select_jobs(jobs, ["Pcsnet"])
    with pytest.raises(InvalidArgumentError, match=r"no variant 'slow'.*'dfd_lite\+\{\"a\":1\}', 'quick'"):
        grid.select_jobs(jobs, ["Dfd:slow"])


def test_supersede_needs_only_and_cannot_be_report_only(tmp_path: Path, monkeypatch, capsys):
    path = _grid(tmp_path)
    monkeypatch.setattr(runner, "run_job", lambda *a: pytest.fail("no job may run"))
    with pytest.raises(InvalidArgumentError, match=r"--supersede .* --only MODEL\[:VARIANT\]"):
        runner.run_grid(path, supersede=True)
    assert cli.main(["benchmark", "-c", str(path), "--supersede"]) == 2
    assert "--supersede re-runs finished jobs and replaces their rows" in capsys.readouterr().err
    with pytest.raises(InvalidArgumentError, match="--report-only"):
        runner.main(["-c", str(path), "--only", "Dfd", "--supersede", "--report-only"])
    assert cli.main(["benchmark", "-c", str(path), "--only", "Nope", "--supersede"]) == 2
    assert "the grid has no model 'Nope'; its models: Dfd, Patchcore" in capsys.readouterr().err
    assert not (tmp_path / "out" / "results.csv").exists()


def test_supersede_on_the_smoke_grid_replaces_exactly_pcsnets_rows(tmp_path: Path, monkeypatch):
    """`anomalib-fewshot benchmark -c configs/benchmark/smoke.yaml --only Pcsnet --supersede` (fake jobs)."""
    monkeypatch.chdir(tmp_path)
    first = FakeRunJob("0.5")
    monkeypatch.setattr(runner, "run_job", first)
    assert cli.main(["benchmark", "-c", str(SMOKE)]) == 0
    csv_path = tmp_path / "benchmark_results" / "smoke" / "results.csv"
    before = csv_path.read_text().splitlines()
    assert len(before) == 1 + 12 and len(first.calls) == 12

    second = FakeRunJob("0.9")
    monkeypatch.setattr(runner, "run_job", second)
    assert cli.main(["benchmark", "-c", str(SMOKE), "--only", "Pcsnet", "--supersede"]) == 0
    assert _keys(second.calls) == ["Pcsnet/pcsnet_lite-quick/demo/1/0", "Pcsnet/pcsnet_lite-quick/demo/full/0"]
    after = csv_path.read_text().splitlines()
    assert len(after) == len(before)
    changed = [i for i, (old, new) in enumerate(zip(before, after, strict=True)) if old != new]
    assert [before[i].split(",")[0] for i in changed] == [
        "Pcsnet",
        "Pcsnet",
    ]  # replaced in place, the rest byte-identical
    rows = store.read_rows(csv_path)
    assert {r["image_auroc"] for r in rows if r["model"] == "Pcsnet"} == {"0.9"}
    assert {r["image_auroc"] for r in rows if r["model"] not in ("Pcsnet", "Padim")} == {"0.5"}

    archive = csv_path.parent / "superseded" / f"smoke_{_today()}.csv"  # the default: beside results.csv
    archived = store.read_rows(archive)
    old_pcsnet = [r for r in csv.DictReader(before) if r["model"] == "Pcsnet"]
    assert [{k: v for k, v in r.items() if k not in ("superseded_utc", "archived")} for r in archived] == old_pcsnet
    assert [(r["model"], r["k_shot"], r["image_auroc"], r["archived"]) for r in archived] == [
        ("Pcsnet", "1", "0.5", "replaced"),
        ("Pcsnet", "full", "0.5", "replaced"),
    ]
    assert all(r["superseded_utc"].startswith(_today()) for r in archived)
    assert not (tmp_path / "benchmark_results" / "smoke" / supersede.STATE_NAME).exists()


def test_supersede_resumes_after_a_kill_with_only_the_remaining_jobs(tmp_path: Path, monkeypatch):
    path = _grid(tmp_path, archive_dir=str(tmp_path / "archive"))
    monkeypatch.setattr(runner, "run_job", FakeRunJob("0.5"))
    runner.run_grid(path)
    out = tmp_path / "out"
    state_path = out / supersede.STATE_NAME

    killed = FakeRunJob("0.9", kill_at=2)
    monkeypatch.setattr(runner, "run_job", killed)
    with pytest.raises(KeyboardInterrupt):
        runner.main(["-c", str(path), "--only", "Dfd", "--supersede"])
    state = json.loads(state_path.read_text())
    assert state["only"] == ["Dfd"]
    assert state["keys"] == [["Dfd", "v", "d", "1", "1", "1", "test"], ["Dfd", "v", "d", "1", "2", "2", "test"]]
    rows = {(r["model"], r["seed"]): r["image_auroc"] for r in store.read_rows(out / "results.csv")}
    assert rows == {("Dfd", "0"): "0.9", ("Dfd", "1"): "0.5", ("Dfd", "2"): "0.5",
                    ("Patchcore", "0"): "0.5", ("Patchcore", "1"): "0.5", ("Patchcore", "2"): "0.5"}  # fmt: skip
    archive = tmp_path / "archive" / f"out_{_today()}.csv"
    assert [r["seed"] for r in store.read_rows(archive)] == ["0"]

    with pytest.raises(InvalidArgumentError, match=r"interrupted --supersede of --only Dfd still has 2 job"):
        runner.run_grid(path, only=["Patchcore"], supersede=True)

    resumed = FakeRunJob("0.9")
    monkeypatch.setattr(runner, "run_job", resumed)
    runner.main(["-c", str(path), "--only", "Dfd", "--supersede"])
    assert _keys(resumed.calls) == ["Dfd/v/d/1/1", "Dfd/v/d/1/2"]
    assert not state_path.exists()
    rows = {(r["model"], r["seed"]): r["image_auroc"] for r in store.read_rows(out / "results.csv")}
    assert [rows[("Dfd", s)] for s in "012"] == ["0.9", "0.9", "0.9"]
    assert [(r["seed"], r["image_auroc"]) for r in store.read_rows(archive)] == [
        ("0", "0.5"),
        ("1", "0.5"),
        ("2", "0.5"),
    ]

    again = FakeRunJob("0.7")  # the same command once finished starts a new supersede of every selected job
    monkeypatch.setattr(runner, "run_job", again)
    runner.run_grid(path, only=["Dfd"], supersede=True)
    assert len(again.calls) == 3 and not state_path.exists()


def test_a_failed_rerun_keeps_the_ok_row_and_stays_in_the_state_file(tmp_path: Path, monkeypatch):
    path = _grid(tmp_path)
    monkeypatch.setattr(runner, "run_job", FakeRunJob("0.5", fail={"Dfd/v/d/1/2"}))
    runner.run_grid(path)
    out = tmp_path / "out"
    archive_dir = tmp_path / "archive"

    failing = FakeRunJob("0.9", fail={"Dfd/v/d/1/1", "Dfd/v/d/1/2"})
    monkeypatch.setattr(runner, "run_job", failing)
    runner.run_grid(path, only=["Dfd"], supersede=True, archive_dir=archive_dir)
    rows = {r["seed"]: r for r in store.read_rows(out / "results.csv") if r["model"] == "Dfd"}
    assert rows["0"]["image_auroc"] == "0.9"
    assert rows["1"]["status"] == "ok" and rows["1"]["image_auroc"] == "0.5"  # the ok row is kept
    assert rows["2"]["error"] == "failed: boom 0.9"  # a failed row is replaced by the new failure
    archived = store.read_rows(archive_dir / f"out_{_today()}.csv")
    assert [(r["seed"], r["status"], r["archived"]) for r in archived] == [
        ("0", "ok", "replaced"),
        ("1", "failed", "failed re-run, ok row kept"),
        ("2", "failed", "replaced"),
    ]
    state = json.loads((out / supersede.STATE_NAME).read_text())
    assert state["keys"] == [["Dfd", "v", "d", "1", "1", "1", "test"]]

    retry = FakeRunJob("0.8")
    monkeypatch.setattr(runner, "run_job", retry)
    runner.run_grid(path, only=["Dfd"], supersede=True, archive_dir=tmp_path / "ignored")
    assert _keys(retry.calls) == ["Dfd/v/d/1/1"]
    assert store.read_rows(out / "results.csv")[1]["image_auroc"] == "0.8"
    assert not (out / supersede.STATE_NAME).exists()
    assert store.read_rows(archive_dir / f"out_{_today()}.csv")[-1]["image_auroc"] == "0.5"  # the state's archive
    assert not (tmp_path / "ignored").exists()


@pytest.mark.parametrize("killed", ["archive_rows", "upsert_rows"])
def test_a_kill_while_replacing_a_row_loses_nothing_and_archives_once(tmp_path: Path, monkeypatch, killed: str):
    """Killed while archiving the old row, or after archiving it and before writing the new one."""
    path = _grid(tmp_path, archive_dir=str(tmp_path / "archive"))
    monkeypatch.setattr(runner, "run_job", FakeRunJob("0.5"))
    runner.run_grid(path)
    monkeypatch.setattr(runner, "run_job", FakeRunJob("0.9"))
    real = getattr(supersede, killed)

    def kill(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(supersede, killed, kill)
    with pytest.raises(KeyboardInterrupt):
        runner.run_grid(path, only=["Dfd:v"], supersede=True)
    rows = store.read_rows(tmp_path / "out" / "results.csv")
    assert [r["image_auroc"] for r in rows if r["model"] == "Dfd"] == ["0.5", "0.5", "0.5"]
    monkeypatch.setattr(supersede, killed, real)
    runner.run_grid(path, only=["Dfd:v"], supersede=True)
    assert [r["image_auroc"] for r in store.read_rows(tmp_path / "out" / "results.csv")][:3] == ["0.9"] * 3
    archived = store.read_rows(tmp_path / "archive" / f"out_{_today()}.csv")
    assert [r["seed"] for r in archived] == ["0", "1", "2"]
