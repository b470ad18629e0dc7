"""Benchmarks: the grid runner (``anomalib-fewshot benchmark -c CONFIG``), its job, plots and diagnostics.

Python API::

    from pathlib import Path
    from anomalib_fewshot.benchmark import run_grid

    results_dir = run_grid(Path("configs/benchmark/real.yaml"))
"""

from anomalib_fewshot.benchmark.runner import run_grid

__all__ = ["run_grid"]
