"""The INT8 grid: quantisation scopes, the static-batch graph wrapper, the report table and a job end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openvino as ov
import pytest
import torch
import yaml
from torch import nn

from anomalib_fewshot.benchmark import int8, runner, store
from anomalib_fewshot.benchmark.grid import load_grid
from anomalib_fewshot.benchmark.report import precision_section
from anomalib_fewshot.components.lifecycle.quantization import ignored_scope, pack_shots, quantize_on_shots
from anomalib_fewshot.errors import InvalidArgumentError
from research import int8_screen
from tests.helpers import write_fake_grid

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "benchmark" / "smoke.yaml"


class _ConvDistance(nn.Module):
    """Features by convolutions, a distance to a constant bank by MatMul, a one-channel smoothing convolution."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.register_buffer("bank", torch.randn(8, 16))
        self.smooth = nn.Conv2d(1, 1, 3, padding=1, bias=False)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.features(images)
        b, c, h, w = feats.shape
        dist = (feats.permute(0, 2, 3, 1).reshape(b, h * w, c) @ self.bank).amin(-1).reshape(b, 1, h, w)
        amap = self.smooth(dist)
        return amap.flatten(1).amax(1), amap


def _graph(batch: int | None = None) -> ov.Model:
    shape = [batch or -1, 3, 16, 16]
    model = ov.convert_model(_ConvDistance().eval(), example_input=torch.rand(2, 3, 16, 16), input=[shape])
    for port, name in zip(model.outputs, ("pred_score", "anomaly_map"), strict=True):
        port.get_tensor().set_names({name})
    return model


def _quantized_inputs(model: ov.Model) -> dict[str, int]:
    """Per operation type, how many of its inputs come from a FakeQuantize."""
    counts: dict[str, int] = {}
    for op in model.get_ops():
        if op.get_type_name() != "FakeQuantize":
            continue
        for target in op.output(0).get_target_inputs():
            kind = target.get_node().get_type_name()
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def _shots() -> torch.Tensor:
    return pack_shots([torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(i)) for i in range(2)])


@pytest.mark.slow
def test_scopes_keep_what_they_name_in_floating_point():
    model = _graph()
    convolutions = [op.get_friendly_name() for op in model.get_ops() if op.get_type_name() == "Convolution"]
    smooth = [name for name in convolutions if "smooth" in name]
    scope = ignored_scope(model, "convolutions")
    assert "MatMul" in scope.types and "Convolution" not in scope.types and "GroupConvolution" not in scope.types
    assert (
        len(convolutions) == 3 and scope.names == smooth
    )  # the one-output-channel convolution smooths a map: never quantised
    assert ignored_scope(model, "no_matmul").types == ["MatMul"]
    with pytest.raises(InvalidArgumentError, match="quantization scope 'fast'"):
        ignored_scope(model, "fast")

    everything = _quantized_inputs(quantize_on_shots(_graph(), _shots(), count=4, scope="all"))
    # NNCF's default quantises the distance's input (before the layout ops that lead to the MatMul)
    assert everything == {"Convolution": 2, "Transpose": 1}, everything
    for scope in ("convolutions", "no_matmul"):  # the two feature convolutions only, never the smoothing
        kept = _quantized_inputs(quantize_on_shots(_graph(), _shots(), count=4, scope=scope))
        assert kept == {"Convolution": 2}, (scope, kept)


@pytest.mark.slow
def test_compiled_graph_pads_a_static_batch_and_drops_the_padding(tmp_path: Path):
    """Anomalib's Patchcore exports with a fixed batch of 2: three images still give three (right) outputs."""
    xml = tmp_path / "static.xml"
    ov.save_model(_graph(batch=2), xml, compress_to_fp16=False)
    graph = int8.CompiledGraph(xml, int8.PRECISIONS["f32"])
    assert graph.batch == 2
    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    scores, maps = graph(images)
    assert scores.shape == (3,) and maps.shape == (3, 16, 16)
    with torch.no_grad():
        want_scores, want_maps = _ConvDistance().eval()(images)
    np.testing.assert_allclose(scores.numpy(), want_scores.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(maps.numpy(), want_maps[:, 0].numpy(), rtol=1e-4, atol=1e-5)


def test_precision_section_reports_deltas_and_speedup():
    base = {"model": "Pcsnet", "variant": "v", "dataset": "d", "k_shot": "1", "profile": "p", "status": "ok"}
    rows = []
    for seed, (fp32, quant) in enumerate([(0.90, 0.88), (0.92, 0.91)]):
        row = {**base, "seed": str(seed), "image_auroc": fp32, "pixel_auroc": 0.8, "aupro": 0.5}
        row |= {"int8_image_auroc": quant, "int8_pixel_auroc": 0.8, "int8_aupro": 0.5}
        row |= {"bf16_image_auroc": fp32, "bf16_pixel_auroc": 0.8, "bf16_aupro": 0.5}
        row |= {"openvino_ms": 30, "bf16_openvino_ms": 20, "int8_openvino_ms": 15, "int8_speedup": 2.0}
        rows.append({k: str(v) for k, v in row.items()})
    table = precision_section(rows)
    assert "| Pcsnet | v | d | 1 | 2 | 0.910 / -0.015 / +0.000 | 0.800 / +0.000 / +0.000 |" in table
    assert table.rstrip().endswith("| 30.0 | 20.0 | 15.0 | 2.00 | 0.020 |")  # worst |Δ| of one seed
    assert precision_section([{**rows[0], "int8_image_auroc": ""}]) == ""


def test_grid_int8_setting_is_checked(tmp_path: Path):
    _, jobs = load_grid(write_fake_grid(tmp_path, int8=["all", "convolutions"]))
    assert jobs[0]["int8"] == ["all", "convolutions"]
    with pytest.raises(InvalidArgumentError, match="int8 must be true, false or a list"):
        load_grid(write_fake_grid(tmp_path, int8=["fastest"]))


@pytest.mark.slow
def test_int8_grid_job_quantises_on_shots_and_fills_the_columns(tmp_path: Path, monkeypatch):
    """One plugin model (its stored shots) and anomalib's Patchcore (the job's shots) through an ``int8: true`` grid."""
    from anomalib_fewshot.data.demo import make_demo_dataset

    monkeypatch.chdir(tmp_path)
    smoke = yaml.safe_load(SMOKE.read_text())
    models = [m for m in smoke["grid"]["models"] if m["model"] in {"Pcsnet", "Patchcore"}]
    make_demo_dataset(tmp_path / "data", "plate", n_train=4, n_test_good=3, n_test_defect=3, size=128)
    datasets = [{"name": "demo", "root": str(tmp_path / "data"), "category": "plate"}]
    path = write_fake_grid(tmp_path, models, {"datasets": datasets, "seeds": [0]}, int8=True, jobs_dir="jobs")
    output = runner.run_grid(path)

    rows = {r["model"]: r for r in store.read_rows(output / "results.csv")}
    assert rows["Pcsnet"]["int8_calibration"] == "stored shots"
    assert rows["Patchcore"]["int8_calibration"] == "job shots"
    for name, row in rows.items():
        assert row["status"] == "ok", row
        for prefix in ("int8_", "bf16_"):
            for metric in ("image_auroc", "pixel_auroc", "aupro"):
                assert 0 <= float(row[prefix + metric]) <= 1, (name, prefix, metric)
        for field in ("openvino_ms", "bf16_openvino_ms", "int8_openvino_ms", "int8_speedup", "torch_ms"):
            assert float(row[field]) > 0, (name, field)
        quantized = ov.Core().read_model(next((tmp_path / "jobs").glob(f"{name}_*/export_int8/int8.xml")))
        assert any(op.get_type_name() == "FakeQuantize" for op in quantized.get_ops()), name
    assert "## FP32, bf16 and INT8 OpenVINO" in (output / "results.md").read_text()


def test_screen_chooses_the_fastest_scope_within_target_else_the_most_accurate():
    def row(model: str, dataset: str, **scopes: tuple[float, float]) -> dict[str, str]:
        out = {"model": model, "dataset": dataset, "status": "ok", "openvino_ms": "100"}
        out |= {"image_auroc": "0.9", "pixel_auroc": "0.9", "aupro": "0.9"}
        for scope, (drop, speedup) in scopes.items():
            prefix = f"int8@{scope}_"
            out |= {prefix + m: str(0.9 - drop) for m in ("image_auroc", "pixel_auroc", "aupro")}
            out |= {prefix + "speedup": str(speedup), prefix + "openvino_ms": str(100 / speedup)}
        return out

    rows = [
        row("A", "d1", all=(0.2, 2.0), no_matmul=(0.005, 1.5), convolutions=(0.0, 1.2)),
        row("A", "d2", all=(0.0, 2.0), no_matmul=(0.008, 1.4), convolutions=(0.0, 1.2)),
        row("B", "d1", all=(0.05, 2.0), no_matmul=(0.03, 1.5), convolutions=(0.02, 1.1)),
        row("B", "d2", all=(0.0, 2.0), no_matmul=(0.0, 1.5), convolutions=(0.0, 1.1)),
    ]
    table, chosen = int8_screen.screen_table(rows)
    assert chosen == {"A": "no_matmul", "B": "convolutions"}
    assert "| A | d1 | no_matmul | -0.005 | -0.005 | -0.005 | 100 |" in table
