"""The Ray executor's settings, resources, feasibility check and log return, and the job's lifeline (no cluster).

The real cluster (two nodes on the loopback address, a killed node, a killed driver) is
``tests/benchmark/test_ray_cluster.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from anomalib_fewshot.benchmark import grid, runner
from anomalib_fewshot.benchmark.lifeline import PARENT_ENV
from anomalib_fewshot.benchmark.ray_executor import (
    RaySettings,
    bring_back_log,
    check_feasible,
    executor_settings,
    job_resources,
)
from anomalib_fewshot.errors import InvalidArgumentError

GIB = 2**30


def test_executor_settings_follow_the_yaml_unless_a_flag_says_otherwise():
    path = Path("grid.yaml")
    assert executor_settings(path, {}, None) is None  # the local runner stays the default
    assert executor_settings(path, {"executor": "local"}, None) is None
    assert executor_settings(path, {}, True) == RaySettings()
    assert executor_settings(path, {}, "10.0.0.5:6379") == RaySettings(address="10.0.0.5:6379")
    config = {"executor": {"ray": {"address": "auto", "cpus_per_job": 2, "memory_gb": 6, "max_retries": 1}}}
    yaml_settings = RaySettings(address="auto", cpus_per_job=2, memory_gb=6, max_retries=1)
    assert executor_settings(path, config, None) == yaml_settings
    assert executor_settings(path, config, True) == yaml_settings
    assert executor_settings(path, config, "h:1") == RaySettings("h:1", cpus_per_job=2, memory_gb=6, max_retries=1)
    assert executor_settings(path, config, False) is None  # --local
    assert executor_settings(path, {"executor": {"ray": None}}, None) == RaySettings()


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"ray": {"cpus": 2}}, r"executor.ray takes \['address', 'cpus_per_job', .*\], got \['cpus'\]"),
        ({"ray": {"cpus_per_job": 0}}, "executor.ray needs cpus_per_job > 0"),
        ({"ray": {"memory_gb": "lots"}}, "executor.ray needs cpus_per_job > 0, memory_gb > 0"),
        ({"ray": {"max_retries": -2}}, r"executor.ray needs .* and max_retries >= -1"),
        ({"dask": {}}, "executor must be 'local' or"),
        ("ray", "executor must be 'local' or"),
    ],
)  # fmt: skip
def test_bad_executor_sections_are_named(section, message):
    with pytest.raises(InvalidArgumentError, match=rf"grid.yaml: {message}"):
        executor_settings(Path("grid.yaml"), {"executor": section}, None)


def test_job_resources_come_from_the_model_entry_else_the_executor(tmp_path: Path):
    config = {
        "grid": {
            "models": [
                {"model": "Dfd", "profile": "dfd_lite", "threads": 2, "memory_gb": 6, "gpus": 1},
                {"model": "Patchcore"},
            ],
            "datasets": [{"name": "d", "root": "x", "category": "c"}],
            "k_shot": [1],
            "seeds": [0],
        }
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(config))
    _, (dfd, patchcore) = grid.load_grid(path)
    settings = RaySettings(cpus_per_job=1, memory_gb=3)
    assert job_resources(dfd, settings) == {"num_cpus": 2.0, "memory": 6 * GIB, "num_gpus": 1.0}
    assert job_resources(patchcore, settings) == {"num_cpus": 1.0, "memory": 3 * GIB}
    assert job_resources(patchcore, RaySettings()) == {"num_cpus": 1.0}  # no memory figure: Ray counts none
    with pytest.raises(InvalidArgumentError, match=r"model Dfd \(dfd_lite\): threads, memory_gb and gpus must be"):
        job_resources({**dfd, "memory_gb": "six"}, settings)


def test_a_request_no_node_offers_is_an_error_naming_the_job_and_the_nodes():
    nodes = [{"CPU": 2.0, "memory": 8.0 * GIB}, {"CPU": 16.0, "memory": 4.0 * GIB, "GPU": 1.0}]
    check_feasible(nodes, {"a": {"num_cpus": 2.0, "memory": 8 * GIB}, "b": {"num_cpus": 8.0, "num_gpus": 1.0}})
    with pytest.raises(InvalidArgumentError) as error:
        check_feasible(nodes, {"a": {"num_cpus": 2.0}, "Patchcore//d/4/0": {"num_cpus": 4.0, "memory": 11 * GIB}})
    assert str(error.value).startswith(
        "Ray: job Patchcore//d/4/0 asks for 4 CPU, 11.0 GiB memory, which no node of the cluster offers "
        "(2 CPU, 8.0 GiB memory; 16 CPU, 4.0 GiB memory, 1 GPU)"
    )
    with pytest.raises(InvalidArgumentError, match="asks for 1 CPU, 2 GPU, which no node"):
        check_feasible(nodes, {"c": {"num_cpus": 1.0, "num_gpus": 2.0}})


def test_a_failed_jobs_log_is_written_on_the_driver_only_where_it_cannot_see_the_workers_copy(tmp_path: Path):
    job = {"model": "Dfd", "variant": "v", "dataset": "d", "k_shot": 1, "seed": 0, "split": "test"}
    bring_back_log(tmp_path, job, "Traceback ...\nValueError: bad\n")
    log = grid.job_work_dir(tmp_path, job) / "log.txt"
    assert log.read_text() == "Traceback ...\nValueError: bad\n"
    bring_back_log(tmp_path, job, "another copy")  # a shared jobs folder: the worker's own log stays
    assert log.read_text() == "Traceback ...\nValueError: bad\n"


def test_the_cli_takes_ray_or_local_and_refuses_ray_with_retime(tmp_path: Path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(runner, "run_grid", lambda *a, **k: calls.append(k["ray"]) or tmp_path)
    (tmp_path / "results.md").write_text("report")
    for argv, expected in ((["--ray"], True), (["--ray", "h:6379"], "h:6379"), (["--local"], False), ([], None)):
        assert runner.main(["-c", "grid.yaml", *argv]) == 0
        assert calls[-1] == expected
    with pytest.raises(SystemExit):
        runner.main(["-c", "grid.yaml", "--ray", "--local"])
    assert "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(InvalidArgumentError, match=r"cannot be combined with .*--ray"):
        runner.main(["-c", "grid.yaml", "--retime", "--ray"])


CHILD = """
import sys, time
from anomalib_fewshot.benchmark.lifeline import die_with_parent
print(die_with_parent(), flush=True)
time.sleep(60)
"""

PARENT = """
import os, subprocess, sys
from anomalib_fewshot.benchmark.lifeline import child_env
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], env=child_env(dict(os.environ)), stdout=sys.stdout)
print(child.pid, flush=True)
child.wait()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the lifeline is Linux's parent-death signal")
def test_a_job_process_dies_with_its_parent():
    import psutil

    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD], stdout=subprocess.PIPE, text=True)
    child_pid = int(parent.stdout.readline())
    assert parent.stdout.readline().strip() == "True"  # the kernel will kill it with its parent
    child = psutil.Process(child_pid)
    assert child.is_running() and child.environ().get(PARENT_ENV) == str(parent.pid)
    os.kill(parent.pid, signal.SIGKILL)  # as a lost Ray worker: no chance to clean up
    parent.wait()
    deadline = time.monotonic() + 10
    while child.is_running() and child.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE


def test_a_job_whose_parent_is_already_gone_exits_at_once():
    env = {**os.environ, PARENT_ENV: str(os.getpid() + 1)}  # the child's parent is this process, not that one
    result = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and result.stdout == ""
