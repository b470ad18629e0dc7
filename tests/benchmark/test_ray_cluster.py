"""The benchmark runner on a real Ray cluster: a head and a worker node on 127.0.0.1, one CPU each.

Each node is a ``ray start --block`` process of this test; teardown stops exactly those processes and what they
started (never ``ray stop``, which would end every Ray process of the machine). Ray registers a node started with
``--node-ip-address 127.0.0.1`` under the host's own address (it replaces a loopback address by a reachable one), so
the nodes and drivers meet on this host's address; nothing leaves the machine. A tiny grid gives the same rows on
Ray as on the local runner; a worker node killed while its job runs costs nothing but time; a killed driver resumes;
Ctrl-C on the driver cancels the jobs it had sent.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from anomalib_fewshot import cli
from anomalib_fewshot.benchmark import parts, runner, store
from anomalib_fewshot.benchmark.store import KEY_FIELDS
from anomalib_fewshot.data.demo import make_demo_dataset
from tests.helpers import TINY_CONFIGS

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Ray clusters of this test: Linux"),
]

#: Metrics compared between executors (timings, machine and dates differ from run to run).
METRICS = ("image_auroc", "pixel_auroc", "aupro", "image_f1max", "pixel_f1max", "image_f1", "n_test")

JOB_MODULE = "anomalib_fewshot.benchmark.job"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Cluster:
    """The test's Ray cluster: its address and the ``ray start --block`` process of each node."""

    address: str
    head: subprocess.Popen
    worker: subprocess.Popen

    @staticmethod
    def processes(launcher: subprocess.Popen) -> list[psutil.Process]:
        """The node's processes: its launcher and everything the launcher started."""
        try:
            root = psutil.Process(launcher.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []


def _start_node(args: list[str], log: Path, env: dict[str, str], worker_ports: int) -> subprocess.Popen:
    """One node: ``ray start --block`` bound to 127.0.0.1, one CPU, its own ports (workers from ``worker_ports``)."""
    ray_cli = Path(sys.executable).with_name("ray")
    command = [
        str(ray_cli), "start", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--num-gpus", "0",
        "--min-worker-port", str(worker_ports), "--max-worker-port", str(worker_ports + 199),
        "--object-store-memory", str(100 * 2**20), "--disable-usage-stats",
        "--node-manager-port", str(_free_port()), "--object-manager-port", str(_free_port()),
        "--dashboard-agent-listen-port", str(_free_port()), "--dashboard-agent-grpc-port", str(_free_port()),
        "--metrics-export-port", str(_free_port()), "--runtime-env-agent-port", str(_free_port()), *args,
    ]  # fmt: skip
    with log.open("w") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)


def _stop(launcher: subprocess.Popen) -> None:
    """Stop one node: its launcher, then whatever of its processes is left (by process id only)."""
    processes = Cluster.processes(launcher)
    launcher.terminate()
    try:
        launcher.wait(timeout=20)
    except subprocess.TimeoutExpired:
        launcher.kill()
    _, alive = psutil.wait_procs(processes, timeout=10)
    for process in alive:
        process.kill()


def _alive_nodes(address: str) -> int:
    code = f"import ray; ray.init({address!r}, log_to_driver=False); print(sum(n['Alive'] for n in ray.nodes()))"
    env = dict(os.environ)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, check=False
    )
    return int(result.stdout.strip().splitlines()[-1]) if result.returncode == 0 and result.stdout.strip() else 0


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # Ray turns token authentication on when ~/.ray/auth_token exists (an earlier `ray.init` on this machine may have
    # written one): this test's nodes and drivers all run without it, whatever the home folder holds
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_AUTH_MODE", "disabled")
        yield from _cluster()


def _cluster() -> Iterator[Cluster]:
    temp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths have a length limit
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        # a lost node is noticed within seconds (Ray's defaults take about half a minute)
        "RAY_health_check_period_ms": "1000",
        "RAY_health_check_timeout_ms": "1000",
        "RAY_health_check_failure_threshold": "3",
    }
    port = _free_port()
    address = f"127.0.0.1:{port}"
    head = _start_node(
        ["--head", "--port", str(port), "--include-dashboard", "false", "--temp-dir", str(temp)],
        temp / "head.log", env, worker_ports=31000,
    )  # fmt: skip
    worker = None
    try:
        deadline = time.monotonic() + 120
        while _alive_nodes(address) < 1:
            assert head.poll() is None and time.monotonic() < deadline, (temp / "head.log").read_text()
            time.sleep(1)
        worker = _start_node(["--address", address], temp / "worker.log", env, worker_ports=31200)
        while _alive_nodes(address) < 2:
            assert worker.poll() is None and time.monotonic() < deadline, (temp / "worker.log").read_text()
            time.sleep(1)
        yield Cluster(address, head, worker)
    finally:
        for launcher in (worker, head):
            if launcher is not None:
                _stop(launcher)
        shutil.rmtree(temp, ignore_errors=True)


def _grid(tmp_path: Path, seeds: list[int]) -> Path:
    """A tiny grid: a plugin model (tiny, random weights) and anomalib's Patchcore, one CPU per job."""
    data = tmp_path / "data"
    if not data.is_dir():
        make_demo_dataset(data, "plate", n_train=4, n_test_good=3, n_test_defect=3, size=64, seed=0)
    tiny = {k: v for k, v in TINY_CONFIGS["Pcsnet"].items() if k != "k_shot"}
    config = {
        "output": str(tmp_path / "out"),
        "jobs_dir": str(tmp_path / "jobs"),
        "timeout_s": 600,
        "speed": False,
        "grid": {
            "models": [
                {"model": "Pcsnet", "variant": "tiny", "profile": "pcsnet_lite", "overrides": tiny, "threads": 1},
                {"model": "Patchcore", "threads": 1},
            ],
            "datasets": [{"name": "demo", "root": str(data), "category": "plate"}],
            "k_shot": [1],
            "seeds": seeds,
        },
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _rows(path: Path) -> dict[tuple[str, ...], dict[str, str]]:
    rows = store.read_rows(path / "out" / "results.csv")
    keys = [store.job_key(row) for row in rows]
    assert len(keys) == len(set(keys)), "a job has two rows"
    return dict(zip(keys, rows, strict=True))


def _job_processes(under: int | None = None) -> list[psutil.Process]:
    """Job processes of the runner on this machine (only those descending from process ``under``, if given)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if JOB_MODULE not in (process.info["cmdline"] or []):
            continue
        try:
            if under is None or under in {parent.pid for parent in process.parents()}:
                found.append(process)
        except psutil.NoSuchProcess:
            continue
    return found


def test_a_grid_on_ray_gives_the_rows_of_the_local_runner(cluster: Cluster, tmp_path: Path):
    local = tmp_path / "local"
    remote = tmp_path / "ray"
    for folder in (local, remote):
        folder.mkdir()
    runner.run_grid(_grid(local, [0, 1]))
    assert runner.main(["-c", str(_grid(remote, [0, 1])), "--ray", cluster.address]) == 0
    local_rows, ray_rows = _rows(local), _rows(remote)
    assert sorted(local_rows) == sorted(ray_rows) and len(ray_rows) == 4
    nodes = {row["ray_node"] for row in ray_rows.values()}
    assert len(nodes) == 2 and "" not in nodes  # every job ran as a Ray task, on both nodes (one CPU each)
    assert all("ray_node" not in row for row in local_rows.values())
    for key, row in ray_rows.items():
        assert row["status"] == "ok", row
        for metric in METRICS:
            if local_rows[key].get(metric, "") == "":
                assert row.get(metric, "") == ""
            else:
                assert float(row[metric]) == pytest.approx(float(local_rows[key][metric]), abs=1e-6), (key, metric)
    assert not ray.is_initialized()  # the runner disconnected from the cluster it did not start


def test_a_request_no_node_offers_stops_before_any_job(cluster: Cluster, tmp_path: Path, capsys):
    path = _grid(tmp_path, [0])
    config = yaml.safe_load(path.read_text())
    config["grid"]["models"][1]["memory_gb"] = 1000  # Patchcore asks for more memory than a node has
    path.write_text(yaml.safe_dump(config))
    assert cli.main(["benchmark", "-c", str(path), "--ray", cluster.address]) == 2
    err = capsys.readouterr().err
    assert "error: Ray: job Patchcore//demo/1/0 asks for 1 CPU, 1000.0 GiB memory, which no node of the cluster " in err
    assert "Traceback" not in err
    assert not store.read_rows(tmp_path / "out" / "results.csv") and not (tmp_path / "jobs").exists()
    assert not ray.is_initialized()


def test_fit_parts_on_ray_catalogues_each_part_once_with_its_node(cluster: Cluster, tmp_path: Path):
    from tests.benchmark.test_parts import _good_images, _parts_file

    _good_images(tmp_path / "images" / "bracket", 21, seed=1)
    _good_images(tmp_path / "images" / "gasket", 21, seed=2)
    entries = [{"name": "bracket", "images": "images/bracket"}, {"name": "gasket", "images": "images/gasket"}]
    path = _parts_file(tmp_path, entries, output="out", executor={"ray": {"address": cluster.address}})
    assert parts.main([str(path)]) == 0  # the YAML's executor: no flag needed
    rows = {row["part"]: row for row in store.read_rows(tmp_path / "out" / "parts.csv")}
    assert sorted(rows) == ["bracket", "gasket"] and all(row["status"] == "ok" for row in rows.values()), rows
    assert all(row["ray_node"] and Path(row["export"]).is_file() for row in rows.values())
    assert not ray.is_initialized()


def test_a_node_lost_while_its_job_runs_costs_a_retry_and_nothing_else(cluster: Cluster, tmp_path: Path):
    path = _grid(tmp_path, [0, 1])
    log = tmp_path / "driver.log"
    with log.open("w") as out:
        driver = subprocess.Popen(
            [sys.executable, "-m", "anomalib_fewshot.cli", "benchmark", "-c", str(path), "--ray", cluster.address],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + 300
    victim = None
    while victim is None:
        assert driver.poll() is None and time.monotonic() < deadline, log.read_text()
        on_node = _job_processes(under=cluster.worker.pid)
        victim = on_node[0] if on_node else None
        time.sleep(0.2)
    spec = json.loads(victim.info["cmdline"][-2])
    # the node dies (its launcher, raylet and workers), as a machine would; the job process is not killed here: it
    # must end by itself (its lifeline, benchmark.lifeline, and Ray's own clean-up of a dead worker's children both
    # end it; the lifeline alone is tested in test_ray_executor.py)
    for process in Cluster.processes(cluster.worker):
        if process.pid != victim.pid:
            process.kill()
    psutil.wait_procs([victim], timeout=20)
    assert not victim.is_running() or victim.status() == psutil.STATUS_ZOMBIE, "an orphan job process"

    assert driver.wait(timeout=900) == 0, log.read_text()
    rows = _rows(tmp_path)
    assert len(rows) == 4 and all(row["status"] == "ok" for row in rows.values()), rows
    assert len({row["ray_node"] for row in rows.values()}) == 1  # the lost node returned no row: all ran on the head
    assert rows[store.job_key(spec)]["status"] == "ok"  # the killed job, run again
    assert not [p for p in _job_processes() if p.info["cmdline"] and str(tmp_path) in " ".join(p.info["cmdline"])]


def test_a_killed_driver_resumes_without_redoing_finished_jobs(cluster: Cluster, tmp_path: Path):
    path = _grid(tmp_path, [3, 4])
    command = [sys.executable, "-m", "anomalib_fewshot.cli", "benchmark", "-c", str(path), "--ray", cluster.address]
    env = dict(os.environ)
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    csv = tmp_path / "out" / "results.csv"
    deadline = time.monotonic() + 300
    while not (csv.is_file() and store.read_rows(csv)):
        assert driver.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    driver.kill()
    driver.wait()
    first = {store.job_key(row): row for row in store.read_rows(csv)}
    assert 1 <= len(first) < 4
    assert subprocess.run(command, stdout=subprocess.DEVNULL, timeout=900, env=env, check=False).returncode == 0
    rows = _rows(tmp_path)
    assert len(rows) == 4 and all(row["status"] == "ok" for row in rows.values())
    for key, row in first.items():
        assert rows[key]["finished_utc"] == row["finished_utc"]  # not run again
    assert {tuple(row[f] for f in KEY_FIELDS) for row in rows.values()} == set(rows)


def test_ctrl_c_on_the_driver_cancels_its_remote_jobs(cluster: Cluster, tmp_path: Path):
    # The driver stays connected after Ctrl-C (a notebook or a script that catches it): Ray would otherwise end the
    # tasks of a driver that exits or disconnects by itself, and only the cancel would not be tested.
    path = _grid(tmp_path, [5, 6])
    log = tmp_path / "driver.log"
    script = (
        "import sys, time, ray\n"
        "from pathlib import Path\n"
        "from anomalib_fewshot.benchmark import runner\n"
        f"ray.init({cluster.address!r}, log_to_driver=False)\n"
        "try:\n"
        f"    runner.run_grid(Path({str(path)!r}), ray=True)\n"
        "except KeyboardInterrupt:\n"
        "    print('caught Ctrl-C, still connected', flush=True)\n"
        "    time.sleep(600)\n"
    )
    with log.open("w") as out:
        driver = subprocess.Popen([sys.executable, "-c", script], stdout=out, stderr=subprocess.STDOUT)

    def ours() -> list[psutil.Process]:
        return [p for p in _job_processes() if str(tmp_path) in " ".join(p.info["cmdline"] or [])]

    try:
        deadline = time.monotonic() + 300
        while not ours():
            assert driver.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        driver.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 60
        while "caught Ctrl-C" not in log.read_text():
            assert driver.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert "Ray task(s) cancelled" in log.read_text(), log.read_text()
        # a tiny job runs for about 20 s: gone within 10 s means cancelled (its worker killed, then its lifeline)
        deadline = time.monotonic() + 10
        while ours():
            assert time.monotonic() < deadline, f"job processes still running: {[p.pid for p in ours()]}"
            time.sleep(0.2)
        assert driver.poll() is None  # the driver is still connected: the cancel, not its exit, ended the tasks
    finally:
        driver.kill()
        driver.wait()
    csv = tmp_path / "out" / "results.csv"
    rows = store.read_rows(csv) if csv.is_file() else []
    assert len(rows) < 4 and len({store.job_key(row) for row in rows}) == len(rows)
