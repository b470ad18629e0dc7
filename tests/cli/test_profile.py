"""``anomalib-fewshot profile``: time per op type and per node of an OpenVINO graph, mapped back to modules."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from anomalib_fewshot import cli
from anomalib_fewshot import profile as profiler
from anomalib_fewshot.errors import InvalidArgumentError


class _Scorer(nn.Module):
    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return maps.flatten(1).topk(50, dim=1).values.mean(1)


class _Tiny(nn.Module):
    """A convolution stack and a TopK in a named sub-module, like a model's map and image score."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 1, 3, padding=1))
        self.scorer = _Scorer()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.features(images)
        return self.scorer(maps), maps


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import openvino as ov

    folder = tmp_path_factory.mktemp("graph")
    onnx_path = folder / "model.onnx"
    torch.onnx.export(_Tiny().eval(), (torch.rand(1, 3, 32, 32),), str(onnx_path), dynamo=True)
    ov.save_model(ov.convert_model(str(onnx_path)), str(folder / "model.xml"))
    return folder / "model.xml"


def test_times_per_op_type_and_node_and_names_the_module(graph: Path):
    result = profiler.profile_graph(graph, threads=1, runs=3)
    types = {row["op_type"]: row for row in result.by_type()}
    assert {"Convolution", "TopK"} <= set(types)
    assert sum(row["share"] for row in types.values()) == pytest.approx(1.0)
    assert all(node.ms >= 0 for node in result.nodes)
    assert result.threads == 1 and result.precision == "f32" and result.input_shape == (1, 3, 32, 32)
    topk = next(node for node in result.nodes if node.node_type == "TopK")
    # from the exporter's metadata in the ONNX file beside the graph: module path, class and source line
    assert topk.module == "scorer: _Scorer (test_profile.py:18)"
    report = profiler.format_profile(result, top=3)
    assert "| TopK |" in report and "Median wall time per inference" in report
    assert len([line for line in report.split("## Top 3 nodes")[1].splitlines() if line.startswith("| ")]) == 1 + 3


def test_without_the_onnx_file_the_module_is_left_blank(graph: Path, tmp_path: Path):
    for suffix in (".xml", ".bin"):
        (tmp_path / f"model{suffix}").write_bytes(graph.with_suffix(suffix).read_bytes())
    result = profiler.profile_graph(tmp_path / "model.xml", threads=1, runs=1)
    assert {node.module for node in result.nodes} == {""}
    named = profiler.profile_graph(tmp_path / "model.xml", threads=1, runs=1, onnx_path=graph.with_suffix(".onnx"))
    assert any(node.module for node in named.nodes)


def test_the_verb_writes_the_report(graph: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "report" / "profile.md"
    assert cli.main(["profile", str(graph), "--threads", "1", "--runs", "2", "--output", str(out)]) == 0
    assert "## Time per op type" in out.read_text()
    assert "## Time per op type" in capsys.readouterr().out


def test_a_graph_of_any_image_size_is_profiled_at_the_size_given(tmp_path: Path):
    import openvino as ov

    # anomalib's exports take any batch and image size (the resize is inside the graph)
    onnx_path = tmp_path / "dynamic.onnx"
    shapes = {"images": {0: torch.export.Dim("batch"), 2: torch.export.Dim("h"), 3: torch.export.Dim("w")}}
    torch.onnx.export(_Tiny().eval(), (torch.rand(2, 3, 32, 32),), str(onnx_path), dynamo=True, dynamic_shapes=shapes)
    xml = tmp_path / "dynamic.xml"
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml))
    assert ov.Core().read_model(str(xml)).inputs[0].get_partial_shape().is_dynamic
    with pytest.raises(InvalidArgumentError, match=r"dynamic.*--size H W"):
        profiler.profile_graph(xml, threads=1, runs=1)
    assert profiler.profile_graph(xml, threads=1, runs=1, size=(40, 24)).input_shape == (1, 3, 40, 24)
    assert cli.main(["profile", str(xml), "--threads", "1", "--runs", "1", "--size", "24", "24"]) == 0


def test_bad_input_is_a_clear_error(graph: Path, tmp_path: Path):
    with pytest.raises(InvalidArgumentError, match="not an OpenVINO graph"):
        profiler.profile_graph(tmp_path / "missing.xml")
    with pytest.raises(InvalidArgumentError, match="takes 32x32 images only"):
        profiler.profile_graph(graph, size=(64, 64))
    (tmp_path / "lonely.xml").write_text("<net/>")
    with pytest.raises(InvalidArgumentError, match=r"its \.bin beside it"):
        profiler.profile_graph(tmp_path / "lonely.xml")
    with pytest.raises(InvalidArgumentError, match="--precision"):
        profiler.profile_graph(graph, precision="int4")
    with pytest.raises(InvalidArgumentError, match="--onnx"):
        profiler.profile_graph(graph, onnx_path=tmp_path / "none.onnx")
    assert cli.main(["profile", str(tmp_path / "missing.xml")]) == 2
