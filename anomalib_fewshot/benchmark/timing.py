"""Timing several OpenVINO graphs fairly: interleaved in one process on the same inputs.

Used by ``--retime`` (:mod:`anomalib_fewshot.benchmark.retime`) and by the INT8 columns of a job
(:mod:`anomalib_fewshot.benchmark.int8`); imports nothing else of the package.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

#: Images each graph runs on, untimed, before the timed ones.
WARMUP = 3

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
