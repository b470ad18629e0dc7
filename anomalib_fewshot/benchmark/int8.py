"""The INT8 columns of a benchmark job: one fitted model as FP32, bf16 and shot-calibrated INT8 OpenVINO graphs.

A grid with ``int8: true`` (``configs/benchmark/int8.yaml``) makes every job, after the usual fit and eager
evaluation, export the model's raw graph (pre-processor and model, no post-processor: metrics need unclamped
outputs) to OpenVINO once, quantise it to INT8 on the shots only (our models through their own ``INT8_PTQ`` step,
:meth:`~anomalib_fewshot.components.lifecycle.lightning.ShotModelMixin._post_training_quantization_ov`, which is what
the stock ``anomalib export --compression_type INT8_PTQ`` runs; anomalib's baselines through the same
:func:`~anomalib_fewshot.components.lifecycle.quantization.quantize_on_shots` on the job's shots), then:

- evaluates the INT8 graph and the bf16 execution of the FP32 graph on the whole test split (same metrics as the
  eager columns, on raw outputs);
- times the three (FP32 with ``INFERENCE_PRECISION_HINT: f32``, bf16, INT8) interleaved in one process on the same
  images, so their ratios are not distorted by load that changes during the job. The INT8 graph runs with the f32
  hint for its remaining floating-point operations: its difference from the FP32 column is quantisation alone.

Columns: ``openvino_ms`` (FP32), ``bf16_openvino_ms``, ``int8_openvino_ms``, ``int8_speedup`` (FP32 / INT8),
``{int8,bf16}_{image_auroc,pixel_auroc,aupro}``, ``int8_calibration`` (what calibrated it).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anomalib_fewshot.benchmark.timing import time_interleaved

#: OpenVINO compile settings of each timed execution.
PRECISIONS: dict[str, dict[str, str]] = {
    "f32": {"INFERENCE_PRECISION_HINT": "f32"},
    "bf16": {"INFERENCE_PRECISION_HINT": "bf16"},
    "int8": {"INFERENCE_PRECISION_HINT": "f32"},
}
#: Metrics repeated for the bf16 and INT8 executions.
COMPARED = ("image_auroc", "pixel_auroc", "aupro")
#: The accuracy target of an INT8 graph: every metric within this of FP32.
TARGET_DELTA = 0.01


def export_raw_graphs(
    model: Any,
    engine: Any,
    work: Path,
    shots: list[torch.Tensor] | None = None,
    scopes: list[str] | None = None,
) -> dict[str, Path]:
    """The model's raw FP32 OpenVINO graph and its shot-calibrated INT8 graph(s).

    Args:
        model: a fitted module (ours, or an anomalib baseline).
        engine: the Engine that fitted it.
        work: the job folder; graphs go to ``work/export_raw`` and ``work/export_int8``.
        shots: for a model without stored shots (anomalib's baselines), the shot images ``(3, S, S)`` in ``[0, 1]``.
        scopes: quantisation scopes to compare (a development screen); by default the model's own INT8 step
            (ours: the stock ``INT8_PTQ`` override with the model's scope; baselines: the default scope).

    Returns:
        ``{"fp32": xml, "int8": xml}``, or ``{"fp32": xml, "int8@<scope>": xml, ...}`` for ``scopes``.

    """
    import openvino as ov
    from anomalib.deploy import ExportType

    from anomalib_fewshot.components.lifecycle.quantization import DEFAULT_SCOPE, pack_shots, quantize_on_shots

    post = model.post_processor
    model.post_processor = None  # raw outputs: rank metrics on clamped maps would see ties
    try:
        fp32 = engine.export(
            model, ExportType.OPENVINO, export_root=work / "export_raw", onnx_kwargs={"opset_version": 18}
        )
    finally:
        model.post_processor = post
    ours = hasattr(model, "calibration_shots")
    packed = model.calibration_shots if ours else pack_shots(shots or [])
    model_type = getattr(model, "quantization_model_type", None)
    paths = {"fp32": Path(fp32)}
    for scope in scopes or [None]:
        graph = ov.Core().read_model(fp32)
        if scope is None and ours:  # the stock INT8_PTQ step, on the shots stored by the fit
            quantized = model._post_training_quantization_ov(graph)
        else:  # a screened scope, or a baseline's default one
            quantized = quantize_on_shots(graph, packed, model_type, scope=scope or DEFAULT_SCOPE)
        name = "int8" if scope is None else f"int8@{scope}"
        path = work / "export_int8" / f"{name.replace('@', '_')}.xml"
        path.parent.mkdir(parents=True, exist_ok=True)
        ov.save_model(quantized, path, compress_to_fp16=False)
        paths[name] = path
    return paths


class CompiledGraph:
    """A compiled OpenVINO graph called on ``(B, 3, H, W)`` tensors; returns raw ``(scores, maps)``.

    A graph exported with a static batch (anomalib's Patchcore traces at 2) is fed whole batches: the last one is
    padded by repeating its final image, and the padding is dropped from the outputs.
    """

    def __init__(self, xml: Path, config: dict[str, str]) -> None:
        import openvino as ov

        self.compiled = ov.Core().compile_model(str(xml), "CPU", config)
        self.request = self.compiled.create_infer_request()
        dim = self.compiled.inputs[0].get_partial_shape()[0]
        self.batch = dim.get_length() if dim.is_static else None
        names = {port.get_any_name(): port for port in self.compiled.outputs}
        self.score_port, self.map_port = names["pred_score"], names["anomaly_map"]

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw image scores ``(B,)`` and maps ``(B, H, W)``."""
        step = self.batch or len(images)
        scores, maps = [], []
        for start in range(0, len(images), step):
            chunk = images[start : start + step]
            n = len(chunk)
            if n < step:
                chunk = torch.cat([chunk, chunk[-1:].expand(step - n, *chunk.shape[1:])])
            result = self.request.infer(chunk.numpy())
            scores.append(torch.from_numpy(np.array(result[self.score_port])).reshape(step)[:n])
            amap = torch.from_numpy(np.array(result[self.map_port]))
            maps.append(amap.reshape(step, *amap.shape[-2:])[:n])
        return torch.cat(scores), torch.cat(maps)


def int8_columns(
    model: Any,
    engine: Any,
    datamodule: Any,
    work: Path,
    evaluate: Callable[[Callable[[torch.Tensor], Any]], dict[str, float]],
    shots: list[torch.Tensor] | None = None,
    timing_images: int = 30,
    scopes: list[str] | None = None,
) -> dict[str, Any]:
    """Export, quantise, evaluate and time one fitted model (see the module docstring for the columns).

    Args:
        model: the fitted module.
        engine: its Engine.
        datamodule: the job's datamodule (its first ``timing_images`` test images are timed).
        work: the job folder.
        evaluate: metrics of a graph callable over the job's test split (the runner's raw-output metrics).
        shots: shot images for a model that stores none (anomalib's baselines).
        timing_images: images timed per graph.
        scopes: a development screen of quantisation scopes (columns ``int8@<scope>_*``, no bf16) instead of the
            model's own INT8 step (columns ``int8_*`` and ``bf16_*``).

    """
    paths = export_raw_graphs(model, engine, work, shots, scopes)
    graphs = {"f32": CompiledGraph(paths["fp32"], PRECISIONS["f32"])}
    if not scopes:  # the measured default: bf16 is what this CPU runs an FP32 graph in unless told otherwise
        graphs["bf16"] = CompiledGraph(paths["fp32"], PRECISIONS["bf16"])
    graphs.update({name: CompiledGraph(path, PRECISIONS["int8"]) for name, path in paths.items() if name != "fp32"})
    row: dict[str, Any] = {"int8_calibration": "stored shots" if hasattr(model, "calibration_shots") else "job shots"}
    for name, graph in graphs.items():
        if name != "f32":
            metrics = evaluate(graph)
            row.update({f"{name}_{metric}": metrics[metric] for metric in COMPARED})
    count = min(timing_images, len(datamodule.test_data))
    batch = graphs["f32"].batch or 1  # a static-batch graph is timed on full batches, reported per image
    images = [datamodule.test_data[i].image[None].float().numpy() for i in range(count)]
    timed = {name: (lambda array, graph=graph: graph(torch.from_numpy(array)), batch) for name, graph in graphs.items()}
    ms = time_interleaved(timed, images)
    row["openvino_ms"] = round(ms.pop("f32"), 1)
    row["openvino_batch"] = batch
    for name, value in ms.items():
        row[f"{name}_openvino_ms"] = round(value, 1)
        if name.startswith("int8"):
            row[f"{name}_speedup"] = round(row["openvino_ms"] / value, 2)
    return row
