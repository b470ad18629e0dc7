"""Timing OpenVINO graphs: fairly (interleaved in one process on the same inputs), and what else a deployment pays.

Used by ``--retime`` (:mod:`anomalib_fewshot.benchmark.retime`) and by the INT8 columns of a job
(:mod:`anomalib_fewshot.benchmark.int8`); imports nothing else of the package.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

#: Images each graph runs on, untimed, before the timed ones.
WARMUP = 3

#: Images per request in the throughput figure (a graph with a static batch keeps its own).
THROUGHPUT_BATCH = 8

#: Seconds the throughput figure runs, after one untimed round of requests.
THROUGHPUT_SECONDS = 3.0

#: A loaded graph: its predict function (one array of shape (batch, 3, H, W)) and its static batch (1: dynamic).
Graph = tuple[Callable[["np.ndarray"], Any], int]


def time_interleaved(graphs: dict[Any, Graph], images: Sequence[np.ndarray], warmup: int = WARMUP) -> dict[Any, float]:
    """Median ms per image of each graph, all timed in turn on the same ``images``.

    Warm-up: each graph once on each of the first ``warmup`` images (not timed). Then, for image ``i``, every graph
    runs once, starting with graph ``i mod len(graphs)`` (rotating order, so no graph always runs first). An image is
    repeated to a graph's static batch and the graph's time divided by that batch.
    """
    import numpy as np

    keys = list(graphs)
    if not keys or not images:
        return {}

    def batched(image: np.ndarray) -> dict[int, np.ndarray]:
        return {b: np.repeat(image, b, axis=0) for b in {batch for _, batch in graphs.values()}}

    for image in images[:warmup]:
        inputs = batched(image)
        for key in keys:
            predict, batch = graphs[key]
            predict(inputs[batch])
    times: dict[Any, list[float]] = {key: [] for key in keys}
    for i, image in enumerate(images):
        inputs = batched(image)
        shift = i % len(keys)
        for key in keys[shift:] + keys[:shift]:
            predict, batch = graphs[key]
            start = time.perf_counter()
            predict(inputs[batch])
            times[key].append((time.perf_counter() - start) * 1000)
    return {key: statistics.median(times[key]) / graphs[key][1] for key in keys}


def deployment_figures(
    xml: Path, image: np.ndarray, batch: int = THROUGHPUT_BATCH, seconds: float = THROUGHPUT_SECONDS
) -> dict[str, Any]:
    """What a deployment pays for ``xml`` besides its latency: start-up, size and throughput (OpenVINO CPU, f32).

    - ``compile_s``: ``read_model`` + ``compile_model`` (latency hint) in a fresh ``ov.Core`` with no model cache, as
      on an edge PC's first start;
    - ``first_inference_ms``: the first inference of that compiled model, on ``image`` (repeated to a static batch,
      divided by it as the latency figures are);
    - ``size_mb``: ``.xml`` + ``.bin`` on disk (10^6 bytes);
    - ``throughput_ips``: images per second compiled with ``PERFORMANCE_HINT: THROUGHPUT``, every request of an
      ``AsyncInferQueue`` (the plugin's optimal number of requests) a batch of ``batch`` copies of ``image`` (a graph
      with a static batch keeps its own: ``throughput_batch``), timed for at least ``seconds`` after one untimed
      round of requests.

    Args:
        xml: The exported graph (``.bin`` beside it).
        image: One input image, shape (1, 3, H, W), float32.
        batch: Images per throughput request for a graph with a dynamic batch.
        seconds: Minimum timed duration of the throughput run.

    """
    import numpy as np
    import openvino as ov

    xml = Path(xml)
    size_mb = (xml.stat().st_size + xml.with_suffix(".bin").stat().st_size) / 1e6
    core = ov.Core()  # a Core of its own: no CACHE_DIR (anomalib's inferencer sets one on its Core)
    start = time.perf_counter()
    graph = core.read_model(xml)
    compiled = core.compile_model(graph, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    compile_s = time.perf_counter() - start
    batch_dim = compiled.inputs[0].get_partial_shape()[0]
    static = batch_dim.get_length() if batch_dim.is_static else None
    first = np.repeat(image, static or 1, axis=0)
    start = time.perf_counter()
    compiled({0: first})
    first_ms = (time.perf_counter() - start) * 1000 / (static or 1)
    del compiled

    per_request = static or batch
    inputs = np.repeat(image, per_request, axis=0)
    compiled = core.compile_model(graph, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "THROUGHPUT"})
    queue = ov.AsyncInferQueue(compiled)
    requests = len(queue)
    for _ in range(requests):  # untimed round: every request allocated and run once
        queue.start_async({0: inputs})
    queue.wait_all()
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        queue.start_async({0: inputs})  # waits for a free request: every request stays busy
        done += per_request
    queue.wait_all()
    throughput = done / (time.perf_counter() - start)
    return {
        "compile_s": round(compile_s, 2),
        "first_inference_ms": round(first_ms, 1),
        "size_mb": round(size_mb, 2),
        "throughput_ips": round(throughput, 1),
        "throughput_batch": per_request,
        "throughput_requests": requests,
    }
