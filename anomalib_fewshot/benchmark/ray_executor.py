"""A grid's jobs as Ray tasks: the same job process on a cluster's nodes, the driver alone writing ``results.csv``.

    anomalib-fewshot benchmark -c GRID.yaml --ray                  # a single-node Ray cluster started here
    anomalib-fewshot benchmark -c GRID.yaml --ray 10.0.0.5:6379    # a running cluster (``ray start --head``)

or in the grid YAML (``--ray ADDRESS`` overrides the address, ``--local`` runs here one job after another)::

    executor:
      ray: {address: null, cpus_per_job: 2, memory_gb: 6, max_retries: 3}

Every job is one Ray task that runs :func:`.runner.run_job` on a worker, i.e. the job process the local runner
starts, under the job's time limit. Its resources: ``num_cpus`` = the model entry's ``threads``, else
``cpus_per_job`` (the job's torch threads are set to the same number); ``memory`` = the model entry's
``memory_gb``, else the executor's (Ray then never starts more jobs on a node than their memory allows); GPUs =
the entry's ``gpus``. A request that no node of the cluster can satisfy is an error before anything runs. A task
whose worker or node is lost is run again elsewhere (``max_retries``); the job process never outlives its worker
(:mod:`.lifeline`). The task returns the job's row (and, for a failed job, the tail of its log, written on the
driver where the driver cannot see the job's folder); the driver writes each row as it arrives, so a killed driver
resumes as the local runner does. Ctrl-C cancels the remote tasks; the rows written stay.

Shared storage: datasets, the jobs folder and the development-split cache must have the same path on every node
(a network file system mounted alike); the driver's working folder is the jobs' working folder, where relative
paths of the grid resolve. Development splits and FDSL heads are built by the driver before any task starts.
Workers get the driver's ``HF_HUB_OFFLINE``, ``HF_HOME``, ``TORCH_HOME``, ``PYTHONPATH`` and ``ANOMALIB_FEWSHOT_*``
variables (Ray's ``runtime_env``); the Python environment with this package must exist on every node.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from anomalib_fewshot.benchmark.grid import job_work_dir
from anomalib_fewshot.benchmark.store import job_key, job_label, job_row
from anomalib_fewshot.errors import InvalidArgumentError, MissingDependencyError

#: Environment variables of the driver that the workers get.
FORWARDED_ENV = ("HF_HUB_OFFLINE", "HF_HOME", "TORCH_HOME", "PYTHONPATH")

#: Characters of a failed job's log brought back to the driver.
LOG_TAIL_CHARS = 64_000

_RAY_KEYS = ("address", "cpus_per_job", "memory_gb", "max_retries")

#: The local runner's job function: ``(job, jobs_dir, timeout_s, cwd=...) -> row``.
RunJob = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class RaySettings:
    """How the jobs run on Ray (the grid YAML's ``executor: {ray: ...}``).

    Attributes:
        address: The cluster's address (``HOST:PORT``, ``ray://...``, ``auto``); None starts a single-node cluster.
        cpus_per_job: CPUs per job when its model entry sets no ``threads``.
        memory_gb: Memory per job (GiB) when its model entry sets no ``memory_gb``; None: Ray counts no memory.
        max_retries: Times a task is run again when its worker or node is lost (-1: no limit).

    """

    address: str | None = None
    cpus_per_job: float = 1.0
    memory_gb: float | None = None
    max_retries: int = 3


def executor_settings(config_path: Path, config: dict[str, Any], ray: bool | str | None) -> RaySettings | None:
    """The Ray settings the grid runs with, or None for the local runner.

    Args:
        config_path: The grid YAML (named in errors).
        config: Its content.
        ray: None: as the YAML's ``executor`` says; False: local; True: Ray (the YAML's settings if any); a string:
            Ray at that address.

    Raises:
        InvalidArgumentError: An ``executor`` section other than ``local`` or ``{ray: {...}}``, an unknown key or a
            value out of range.

    """
    section = config.get("executor")
    from_yaml = None
    if isinstance(section, dict) and set(section) == {"ray"}:
        options = section["ray"] or {}
        unknown = sorted(set(options) - set(_RAY_KEYS)) if isinstance(options, dict) else ["(not a mapping)"]
        if unknown:
            msg = f"{config_path}: executor.ray takes {list(_RAY_KEYS)}, got {unknown}"
            raise InvalidArgumentError(msg)
        from_yaml = _checked(config_path, RaySettings(**options))
    elif section not in (None, "local"):
        msg = f"{config_path}: executor must be 'local' or {{ray: {{{', '.join(_RAY_KEYS)}}}}}, got {section!r}"
        raise InvalidArgumentError(msg)
    if ray is False or (ray is None and from_yaml is None):
        return None
    settings = from_yaml or RaySettings()
    return replace(settings, address=ray) if isinstance(ray, str) and ray else settings


def _checked(config_path: Path, settings: RaySettings) -> RaySettings:
    """``settings`` if its numbers are in range, else a clear error."""
    try:
        good = float(settings.cpus_per_job) > 0 and int(settings.max_retries) >= -1
        good = good and (settings.memory_gb is None or float(settings.memory_gb) > 0)
    except (TypeError, ValueError):
        good = False
    if not good:
        msg = (
            f"{config_path}: executor.ray needs cpus_per_job > 0, memory_gb > 0 (or null) and max_retries >= -1 (-1: "
            f"no limit), got "
            f"{settings}"
        )
        raise InvalidArgumentError(msg)
    return settings


def add_executor_flags(parser: argparse.ArgumentParser, what: str, source: str) -> None:
    """``--ray [ADDRESS]`` and ``--local`` (exclusive) on ``parser``; ``what`` runs, ``source`` is the YAML's kind."""
    executor = parser.add_mutually_exclusive_group()
    executor.add_argument(
        "--ray", nargs="?", const=True, default=None, metavar="ADDRESS",
        help=f"run {what} as Ray tasks: on the cluster at ADDRESS (ray start --head), else the {source} YAML's "
        "executor.ray address, else a single-node cluster started here (pip install 'anomalib-fewshot[ray]')",
    )  # fmt: skip
    executor.add_argument(
        "--local", action="store_true", help=f"run {what} here one after another, whatever the YAML's executor"
    )


def executor_choice(args: argparse.Namespace) -> bool | str | None:
    """The ``ray`` argument of :func:`executor_settings` from the flags of :func:`add_executor_flags`."""
    return False if args.local else args.ray


def import_ray() -> Any:
    """The ``ray`` module, or a clear error saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        msg = 'the Ray executor needs Ray: pip install "anomalib-fewshot[ray]"'
        raise MissingDependencyError(msg) from exc
    return ray


def job_resources(job: dict[str, Any], settings: RaySettings) -> dict[str, float]:
    """Ray resources of ``job``: ``num_cpus``, and ``memory`` (bytes) and ``num_gpus`` where set.

    Raises:
        InvalidArgumentError: A model entry's ``threads``, ``memory_gb`` or ``gpus`` that is not a positive number.

    """
    values = {"threads": job.get("threads") or settings.cpus_per_job, "memory_gb": job.get("memory_gb")}
    values["memory_gb"] = values["memory_gb"] or settings.memory_gb
    values["gpus"] = job.get("gpus") or 0
    try:
        numbers = {name: float(value or 0) for name, value in values.items()}
    except (TypeError, ValueError):
        numbers = {}
    if not numbers or numbers["threads"] <= 0 or min(numbers.values()) < 0:
        msg = f"model {job['model']} ({job['variant']}): threads, memory_gb and gpus must be positive numbers: {values}"
        raise InvalidArgumentError(msg)
    resources = {"num_cpus": numbers["threads"]}
    if numbers["memory_gb"]:
        resources["memory"] = int(numbers["memory_gb"] * 2**30)
    if numbers["gpus"]:
        resources["num_gpus"] = numbers["gpus"]
    return resources


def check_feasible(nodes: list[dict[str, float]], requests: dict[str, dict[str, float]]) -> None:
    """Fail unless one node offers each job's request (``nodes``: the alive nodes' ``Resources`` of ``ray.nodes()``).

    Raises:
        InvalidArgumentError: The first request no node can satisfy, with the largest node's offer.

    """
    names = {"num_cpus": "CPU", "memory": "memory", "num_gpus": "GPU"}
    for label, request in requests.items():
        if any(all(node.get(names[k], 0) >= v for k, v in request.items()) for node in nodes):
            continue
        offers = "; ".join(_describe({k: node.get(v, 0) for k, v in names.items()}) for node in nodes) or "no node"
        msg = (
            f"Ray: job {label} asks for {_describe(request)}, which no node of the cluster offers ({offers}): lower "
            "the model entry's threads / memory_gb / gpus or executor.ray's cpus_per_job / memory_gb, or add a node"
        )
        raise InvalidArgumentError(msg)


def _describe(resources: dict[str, float]) -> str:
    memory = resources.get("memory", 0)
    text = f"{resources.get('num_cpus', 0):g} CPU"
    text += f", {memory / 2**30:.1f} GiB memory" if memory else ""
    return text + (f", {resources['num_gpus']:g} GPU" if resources.get("num_gpus") else "")


class _Tracker:
    """A Ray actor on the driver's node: the jobs whose task has started (for the progress line)."""

    def __init__(self) -> None:
        self.started: set[tuple[str, ...]] = set()

    def start(self, key: tuple[str, ...]) -> None:
        self.started.add(key)

    def keys(self) -> set[tuple[str, ...]]:
        return self.started


def run_task(
    run_job: RunJob, job: dict[str, Any], jobs_dir: str, cwd: str, tracker: Any = None
) -> tuple[dict[str, Any], str]:
    """The body of one Ray task: ``run_job`` (the local runner's) on the worker; return the row and a failed job's log.

    The row gets a ``ray_node`` column: the id of the node that ran the job.
    """
    if tracker is not None:
        tracker.start.remote(job_key(job))
    import ray

    row = run_job(job, Path(jobs_dir), float(job["timeout_s"]), cwd=cwd if Path(cwd).is_dir() else None)
    row["ray_node"] = ray.get_runtime_context().get_node_id()  # the node that ran it (its last try)
    log = ""
    if row.get("status") != "ok":
        path = job_work_dir(Path(jobs_dir), job) / "log.txt"
        log = path.read_text(errors="replace")[-LOG_TAIL_CHARS:] if path.is_file() else ""
    return row, log


def bring_back_log(jobs_dir: Path, job: dict[str, Any], log: str) -> None:
    """Write a failed job's log on the driver, where the worker's copy is not visible (no shared jobs folder)."""
    path = job_work_dir(jobs_dir, job) / "log.txt"
    if log and not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(log)


def _failed_row(job: dict[str, Any], error: str) -> dict[str, Any]:
    return job_row(job, status="failed", error=(error.strip().splitlines() or [""])[0][:300])


def connect(ray: Any, settings: RaySettings) -> bool:
    """Connect to (or start) the cluster unless connected; return whether this call did (and must shut it down).

    Raises:
        InvalidArgumentError: Nothing answers at the address.

    """
    if ray.is_initialized():
        return False
    env = {k: v for k, v in os.environ.items() if k in FORWARDED_ENV or k.startswith("ANOMALIB_FEWSHOT_")}
    options: dict[str, Any] = {"runtime_env": {"env_vars": env} if env else None, "log_to_driver": False}
    if settings.address is None:
        options["include_dashboard"] = False
    try:
        ray.init(address=settings.address, **options)
    except ConnectionError as exc:
        msg = (
            f"--ray {settings.address}: no Ray cluster answers there ({str(exc).splitlines()[0]}); start one with "
            "`ray start --head`, or leave the address out for a single-node cluster on this machine"
        )
        raise InvalidArgumentError(msg) from exc
    return True


def run_on_ray(
    run_job: RunJob,
    jobs: list[dict[str, Any]],
    jobs_dir: Path,
    settings: RaySettings,
    record: Callable[[dict[str, Any]], None],
    total: int,
    done: int,
) -> None:
    """Run ``jobs`` as Ray tasks; ``record`` each row on the driver as its task returns.

    Args:
        run_job: Runs one job in a process and returns its row (:func:`.runner.run_job`; pickled by reference).
        jobs: The jobs to run (development split and heads already resolved by the runner).
        jobs_dir: The jobs folder (the same path on every node).
        settings: The cluster and the default resources.
        record: Writes one row (called on the driver only).
        total: Jobs of the selection (for the progress bar).
        done: Jobs of the selection already finished.

    Raises:
        InvalidArgumentError: A job's request fits no node; the address answers not.
        MissingDependencyError: Ray is not installed.
        KeyboardInterrupt: Ctrl-C, after cancelling the tasks still running.

    """
    ray = import_ray()
    requests = {job_label(job): job_resources(job, settings) for job in jobs}
    if not jobs:
        return
    jobs_dir = Path(jobs_dir).resolve()
    started_here = connect(ray, settings)
    try:
        check_feasible([n["Resources"] for n in ray.nodes() if n.get("Alive")], requests)
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
        tracker = ray.remote(_Tracker).options(num_cpus=0, scheduling_strategy=here).remote()
        task = ray.remote(run_task)
        pending = {}
        for job in jobs:
            request = requests[job_label(job)]
            job = {**job, "threads": job.get("threads") or max(1, round(request["num_cpus"]))}
            options = {**request, "max_retries": int(settings.max_retries), "retry_exceptions": False}
            pending[task.options(**options).remote(run_job, job, str(jobs_dir), os.getcwd(), tracker)] = job
        _collect(ray, pending, tracker, jobs_dir, record, total, done)
    finally:
        if started_here:
            ray.shutdown()


def _collect(
    ray: Any,
    pending: dict[Any, dict[str, Any]],
    tracker: Any,
    jobs_dir: Path,
    record: Callable[[dict[str, Any]], None],
    total: int,
    done: int,
) -> None:
    """Record each task's row as it returns, with a progress bar: jobs done / running / failed."""
    from rich.progress import Progress

    finished: set[tuple[str, ...]] = set()
    failed = 0
    with Progress() as progress:
        bar = progress.add_task("ray", total=total, completed=done)
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=2.0)
                for ref in ready:
                    job = pending.pop(ref)
                    try:
                        row, log = ray.get(ref)
                    except ray.exceptions.RayError as exc:  # retries used up (the node lost each time), or a crash
                        row, log = _failed_row(job, f"failed: Ray: {type(exc).__name__}: {exc}"), ""
                    bring_back_log(jobs_dir, job, log)
                    record(row)
                    finished.add(job_key(job))
                    failed += row.get("status") != "ok"
                    progress.advance(bar)
                try:
                    running = len(ray.get(tracker.keys.remote(), timeout=5) - finished)
                except ray.exceptions.RayError:  # the tracker's node is gone: the count is unknown, the grid goes on
                    running = "?"
                status = f"jobs: {done + len(finished)} done, {running} running, {failed} failed"
                progress.update(bar, description=status)
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref, force=True)
            print(
                f"interrupted: {len(pending)} Ray task(s) cancelled; the finished rows are written, rerun the command "
                "to resume",
                file=sys.stderr,
            )
            raise
