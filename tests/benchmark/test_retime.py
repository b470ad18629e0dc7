"""--retime: exported graphs of finished rows timed interleaved on the same inputs, ratios to Patchcore, errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from anomalib_fewshot import cli
from anomalib_fewshot.benchmark import grid, retime, runner, store, timing
from anomalib_fewshot.benchmark.machine import cpu_name
from anomalib_fewshot.errors import MissingFileError

#: Fake per-image cost (ms) of each model's graph, and its static batch.
COST = {"Dfd": (35.0, 1), "Patchcore": (10.0, 2), "Pcsnet": (4.0, 1)}


class FakeClock:
    """time.perf_counter for retime: advances only when a fake graph runs (so the timings are exact)."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


def _grid(tmp_path: Path) -> Path:
    config = {
        "output": str(tmp_path / "out"),
        "jobs_dir": str(tmp_path / "jobs"),
        "grid": {
            "models": [{"model": "Dfd", "variant": "v", "profile": "p"}, {"model": "Patchcore"}, {"model": "Pcsnet"}],
            "datasets": [{"name": "d", "root": "x", "category": "c"}, {"name": "e", "root": "y", "category": "c"}],
            "k_shot": [1],
            "seeds": [0, 1],
        },
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def fake_grid(tmp_path: Path, monkeypatch) -> dict[str, Any]:
    """A finished grid (Dfd d/1/1, Patchcore e/1/1 failed), an export per job, fake graphs, images and clock."""
    path = _grid(tmp_path)
    _, jobs = grid.load_grid(path)
    for job in jobs:
        failed = store.job_label(job) in ("Dfd/v/d/1/1", "Patchcore//e/1/1")
        row = {**{f: job[f] for f in store.KEY_FIELDS}, "profile": job["profile"], "openvino_ms": 99.0}
        store.upsert_row(tmp_path / "out" / "results.csv", {**row, "status": "failed" if failed else "ok"})
        xml = grid.job_work_dir(tmp_path / "jobs", job) / "export" / "weights" / "openvino" / "model.xml"
        xml.parent.mkdir(parents=True)
        xml.write_text(job["model"])
    clock, calls, loaded = FakeClock(), [], []
    monkeypatch.setattr(timing.time, "perf_counter", clock.perf_counter)

    def load_graph(xml: Path):
        model = xml.read_text()
        loaded.append(xml)
        cost, batch = COST[model]

        def predict(array: np.ndarray) -> None:
            assert array.shape == (batch, 3, 4, 4)
            assert (array == array[0]).all()  # the image repeated to the static batch
            calls.append((xml.parents[3].name, int(array[0, 0, 0, 0])))
            clock.now += cost * batch / 1000

        return predict, batch

    def load_test_images(job: dict[str, Any], n_images: int) -> list[np.ndarray]:
        return [np.full((1, 3, 4, 4), i, dtype=np.float32) for i in range(n_images)]

    def deployment_figures(xml: Path, image: np.ndarray) -> dict[str, Any]:
        assert image.shape == (1, 3, 4, 4) and (image == 0).all()  # the dataset's first image
        cost, batch = COST[xml.read_text()]
        figures.append(xml)
        return {"compile_s": cost / 10, "first_inference_ms": 3 * cost, "size_mb": cost / 5,
                "throughput_ips": 700 / cost, "throughput_batch": batch if batch > 1 else 8,
                "throughput_requests": 2}  # fmt: skip

    figures: list[Path] = []
    monkeypatch.setattr(retime, "load_graph", load_graph)
    monkeypatch.setattr(retime, "load_test_images", load_test_images)
    monkeypatch.setattr(retime, "deployment_figures", deployment_figures)
    return {"path": path, "out": tmp_path / "out", "jobs": tmp_path / "jobs", "calls": calls, "loaded": loaded,
            "figures": figures}  # fmt: skip


def test_retime_writes_ms_per_image_and_ratios_to_patchcore_of_the_same_dataset_k_and_seed(fake_grid):
    command = ["-c", str(fake_grid["path"]), "--retime", "--only", "Dfd", "--retime-images", "5"]
    assert runner.main(command) == 0
    rows = store.read_rows(fake_grid["out"] / "retime.csv")
    got = {store.job_label(r): (r["ms_per_image"], r["ratio_to_patchcore"]) for r in rows}
    assert got == {  # Dfd d/1/1 failed: not timed, nor is its Patchcore row; Pcsnet is not selected
        "Dfd/v/d/1/0": ("35.0", "3.5"),
        "Dfd/v/e/1/0": ("35.0", "3.5"),
        "Dfd/v/e/1/1": ("35.0", ""),  # its Patchcore row failed: no ratio
        "Patchcore//d/1/0": ("10.0", "1.0"),
        "Patchcore//e/1/0": ("10.0", "1.0"),
    }
    row = rows[0]
    assert row["patchcore_ms_per_image"] == "10.0" and row["results_openvino_ms"] == "99.0"
    assert row["n_images"] == "5" and row["machine"] == cpu_name() and row["timed_utc"].startswith("20")
    assert row["command"] == "anomalib-fewshot benchmark " + " ".join(command)
    assert {r["openvino_batch"] for r in rows if r["model"] == "Patchcore"} == {"2"}
    assert row["export"].endswith("model.xml")
    report = (fake_grid["out"] / "retime.md").read_text()
    assert "| Dfd | v | d | 1 | 0 | 0 | test | 35.0 | 3.5 | 10.0 | 99.0 | 1 | 5 | 3.5 | 105.0 | 7.0 | 20.0 | 8 |" in (
        report
    )
    assert "| Dfd | v | e | 1 | 1 | 1 | test | 35.0 | – | – | 99.0 | 1 | 5 | 3.5 | 105.0 | 7.0 | 20.0 | 8 |" in report
    patchcore = "| Patchcore |  | d | 1 | 0 | 0 | test | 10.0 | 1.0 | 10.0 | 99.0 | 2 | 5 | 1.0 | 30.0 | 2.0 | 70.0 | 2"
    assert patchcore in report
    assert sorted(fake_grid["figures"]) == sorted(Path(r["export"]) for r in rows)  # once per timed graph
    assert f"UTC: `anomalib-fewshot benchmark {' '.join(command)}`" in report

    # dataset e: its 3 graphs in one interleaved loop, warm-up on the first 3 images, then every graph once per
    # image on the same image, the order rotated by one graph per image
    calls = [c for c in fake_grid["calls"] if c[0].split("_")[2] == "e"]
    names = sorted({name for name, _ in calls})
    assert len(names) == 3 and len(calls) == 3 * (3 + 5)
    warmup, timed = calls[:9], calls[9:]
    assert [image for _, image in warmup] == [0] * 3 + [1] * 3 + [2] * 3
    firsts = []
    for i in range(5):
        block = timed[3 * i : 3 * i + 3]
        assert {image for _, image in block} == {i} and sorted(name for name, _ in block) == names
        firsts.append(block[0][0])
    assert len(set(firsts[:3])) == 3  # each graph runs first once in three images


def test_retime_replaces_earlier_retimings_of_the_same_job_and_keeps_the_others(fake_grid, monkeypatch):
    assert runner.main(["-c", str(fake_grid["path"]), "--retime", "--only", "Pcsnet", "--retime-images", "2"]) == 0
    monkeypatch.setitem(COST, "Patchcore", (20.0, 2))
    assert retime.main(["-c", str(fake_grid["path"]), "--only", "Dfd:v", "--images", "2"]) == 0
    rows = {store.job_label(r): r for r in store.read_rows(fake_grid["out"] / "retime.csv")}
    assert rows["Pcsnet//e/1/0"]["ratio_to_patchcore"] == "0.4"  # from the first run (Pcsnet 4, Patchcore 10)
    assert rows["Pcsnet//e/1/0"]["command"].startswith("anomalib-fewshot benchmark")
    assert rows["Patchcore//e/1/0"]["ms_per_image"] == "20.0"  # re-timed by the second run
    assert rows["Dfd/v/e/1/0"]["ratio_to_patchcore"] == "1.75"
    assert rows["Dfd/v/e/1/0"]["command"].startswith("python -m anomalib_fewshot.benchmark.retime")
    assert len(rows) == 4 + 3 + 3  # Pcsnet's 4 rows, Dfd's 3 finished ones, the 3 finished Patchcore rows


def test_retime_without_an_export_names_the_row_and_folder_and_times_nothing(fake_grid, capsys):
    _, jobs = grid.load_grid(fake_grid["path"])
    patchcore = next(job for job in jobs if store.job_label(job) == "Patchcore//e/1/0")
    export = grid.job_work_dir(fake_grid["jobs"], patchcore) / "export"
    (export / "weights" / "openvino" / "model.xml").unlink()
    with pytest.raises(MissingFileError, match=r"row Patchcore//e/1/0 has no exported OpenVINO graph"):
        retime.retime_grid(fake_grid["path"], only=["Dfd"])
    assert cli.main(["benchmark", "-c", str(fake_grid["path"]), "--retime", "--only", "Dfd"]) == 2
    err = capsys.readouterr().err
    assert f"expected an .xml under {export} " in err and "Traceback" not in err
    assert retime.main(["-c", str(fake_grid["path"])]) == 2
    assert "row Patchcore//e/1/0 has no exported OpenVINO graph" in capsys.readouterr().err
    assert fake_grid["loaded"] == [] and fake_grid["calls"] == [] and fake_grid["figures"] == []
    assert not (fake_grid["out"] / "retime.csv").exists()


def test_retime_rejects_other_modes_and_an_unfinished_selection(fake_grid, tmp_path: Path):
    with pytest.raises(ValueError, match="--retime runs no job"):
        runner.main(["-c", str(fake_grid["path"]), "--retime", "--only", "Dfd", "--supersede"])
    store.write_rows(fake_grid["out"] / "results.csv", [])
    with pytest.raises(ValueError, match=r"no finished \(ok\) row of Dfd"):
        retime.retime_grid(fake_grid["path"], only=["Dfd"])


@pytest.mark.slow
def test_retime_loads_the_first_test_images_as_the_job_does(tmp_path: Path):
    """The real image loader on a generated MVTec-layout dataset (imports anomalib.data, a few seconds)."""
    from anomalib_fewshot.data.demo import make_demo_dataset

    make_demo_dataset(tmp_path / "data", "plate", n_train=2, n_test_good=2, n_test_defect=2, size=32)
    job = {"dataset": "demo", "root": str(tmp_path / "data"), "category": "plate", "datamodule": "MVTecAD"}
    images = retime.load_test_images(job, 3)
    assert len(images) == 3
    assert all(image.shape == (1, 3, 32, 32) and image.dtype == np.float32 for image in images)
    assert all(0 <= image.min() and image.max() <= 1 for image in images)
    with pytest.raises(MissingFileError, match="category 'plate' of dataset demo not found"):
        retime.load_test_images({**job, "root": str(tmp_path / "nowhere")}, 3)


def _conv_graph(path: Path, batch: int) -> Path:
    """A real OpenVINO graph: one 3x3 convolution (1000 filters, 0.1 MB), input (batch or dynamic, 3, 16, 16)."""
    import openvino as ov
    import openvino.opset13 as ops

    image = ops.parameter([batch, 3, 16, 16], np.float32)
    weights = ops.constant(np.random.default_rng(0).random((1000, 3, 3, 3), dtype=np.float32))
    conv = ops.convolution(image, weights, [1, 1], [1, 1], [1, 1], [1, 1])
    ov.save_model(ov.Model([ops.relu(conv)], [image]), path, compress_to_fp16=False)
    return path


@pytest.mark.parametrize(("batch", "per_request"), [(-1, 8), (2, 2)])
def test_deployment_figures_compile_and_run_the_real_graph(tmp_path: Path, batch: int, per_request: int):
    xml = _conv_graph(tmp_path / "model.xml", batch)
    image = np.random.default_rng(1).random((1, 3, 16, 16), dtype=np.float32)
    figures = timing.deployment_figures(xml, image, seconds=0.2)
    on_disk = (xml.stat().st_size + xml.with_suffix(".bin").stat().st_size) / 1e6
    assert figures["size_mb"] == round(on_disk, 2) and 0.1 < on_disk < 1  # 1000 x 3 x 3 x 3 float32 weights
    assert figures["throughput_batch"] == per_request  # batch 8 unless the export's batch is static
    assert figures["throughput_requests"] >= 1
    assert figures["compile_s"] >= 0 and figures["first_inference_ms"] > 0 and figures["throughput_ips"] > 0
