"""Benchmarks: the grid runner (``anomalib-fewshot benchmark -c CONFIG``), its job, plots and diagnostics.

Modules: :mod:`.grid` (grid YAML → job specs, skip rules, ``--only``), :mod:`.store` (``results.csv``),
:mod:`.report` (``results.md``), :mod:`.runner` (job subprocesses, ``run_grid``, the command),
:mod:`.supersede` (``--supersede``: re-run, archive, resume) and :mod:`.retime` (``--retime``: exported graphs
re-timed interleaved in one process).

Python API::

    from pathlib import Path
    from anomalib_fewshot.benchmark import retime_grid, run_grid

    results_dir = run_grid(Path("configs/benchmark/real.yaml"))
    run_grid(Path("configs/benchmark/real.yaml"), only=["Ed"], supersede=True)  # re-run Ed's jobs
    retime_md = retime_grid(Path("configs/benchmark/real.yaml"), only=["Ed"])
"""

from anomalib_fewshot.benchmark.retime import retime_grid
from anomalib_fewshot.benchmark.runner import run_grid

__all__ = ["retime_grid", "run_grid"]
