"""``adrun sweep --backend ray`` on a real two-node Ray cluster on loopback (tests/ray_cluster.py).

The cluster: a head node (127.0.0.2, 1 CPU) and a worker node (127.0.0.3, 1 CPU), each a
``ray start`` process in a folder of its own; sweeps run through the real CLI. The files are
on this machine's one disk, which every node sees: honest for "paths every node can see".
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from ray_cluster import LocalCluster
from sweeps import CATEGORIES, adrun, record, sweep_config, tables, wait_for
from typer.testing import CliRunner

from adrun.cli import app

WORKER_IP = "127.0.0.3"


def attempts(exp: Path, category: str, label: str = "patchcore") -> list[dict]:
    path = exp / "runs" / label / category / "seed-42" / "attempts.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def cluster():
    # Short base path: Ray's unix sockets live under it.
    base = Path(tempfile.mkdtemp(prefix="adrun-ray-", dir="/tmp"))
    home = base / "home"
    env = {
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / "cache"),
        "TORCH_HOME": str(home / "torch"),
        "HF_HOME": str(home / "hf"),
        "HF_HUB_OFFLINE": "1",
        "TQDM_DISABLE": "1",
    }
    local = LocalCluster(base, env=env)
    try:
        local.start_head(cpus=1)
        local.add_node("worker", WORKER_IP, cpus=1)
        with local.driver():  # the sweeps below, in this process or not, join with the token
            yield local
    finally:
        local.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_without_ray_the_error_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    config = sweep_config(tmp_path, categories=["tile"])
    result = CliRunner().invoke(app, ["sweep", str(config), "--backend", "ray"])
    assert result.exit_code == 2
    assert result.stderr == (
        "adrun: error: --backend ray needs Ray, which is not installed; run: pip install 'adrun[ray]'\n"
    )


def test_address_needs_the_ray_backend(tmp_path):
    result = CliRunner().invoke(app, ["sweep", str(sweep_config(tmp_path)), "--address", "127.0.0.2:6379"])
    assert result.exit_code == 2
    assert result.stderr == "adrun: error: --address: only with --backend ray\n"


def test_an_address_where_no_head_answers_fails_fast(tmp_path):
    from ray_cluster import free_port

    address = f"127.0.0.2:{free_port()}"  # nothing listens there
    start = time.monotonic()
    result = CliRunner().invoke(
        app, ["sweep", str(sweep_config(tmp_path, categories=["tile"])), "--backend", "ray", "--address", address]
    )
    assert result.exit_code == 2 and time.monotonic() - start < 30
    assert result.stderr.startswith(f"adrun: error: --address {address}: no Ray head answers there (")


@pytest.mark.slow
@pytest.mark.ray
def test_ray_sweep_gives_the_local_tables_cell_by_cell(tmp_path, cluster, reference):
    proc = adrun("sweep", sweep_config(tmp_path), "--backend", "ray", "--address", cluster.address)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert f"ray cluster {cluster.address}: 2 nodes, 2 CPUs, 0 GPUs" in out
    assert "ray dashboard: none" in out
    assert "token authentication" not in out  # the cluster checks tokens: nothing to warn about
    exp = tmp_path / "results" / "tiny"
    assert tables(exp) == tables(reference)
    for category in CATEGORIES:
        ray_record, local_record = record(exp, category), record(reference, category)
        assert ray_record["status"] == "success" and ray_record["attempts"] == 1
        assert ray_record["metrics"] == local_record["metrics"]
        assert ray_record["key"] == local_record["key"]
        assert ray_record["node"] in ("127.0.0.2", WORKER_IP)
        assert f"@ {ray_record['node']})" in out
        assert (exp / "runs/patchcore" / category / "seed-42" / "model.ckpt").stat().st_size > 0
        assert (exp / "runs/patchcore" / category / "seed-42" / "log.txt").stat().st_size > 0

    again = adrun("sweep", sweep_config(tmp_path), "--backend", "ray", "--address", cluster.address)
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0 and out.count("skip") == 3, out


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize("hidden", ["data", "output"])
def test_preflight_names_the_node_that_cannot_see_a_path(tmp_path, monkeypatch, cluster, hidden):
    """A relative path resolves, on each node, in the folder where `ray start` ran there, as
    it would on separate machines. The driver's folder and the head's have the dataset (or
    the output folder) under that name; the worker's does not: that node cannot see it."""
    from adrun import synthetic

    data = synthetic.make_dataset(tmp_path / "data", ["tile"], image_size=32, n_train=2, n_test_good=1, n_test_defect=1)
    (tmp_path / "out").mkdir()
    name = f"pf-{hidden}-{os.getpid()}"
    target = data if hidden == "data" else tmp_path / "out"
    for folder in (tmp_path / "driver", cluster.nodes["head"].cwd):
        folder.mkdir(exist_ok=True)
        (folder / name).symlink_to(target)
    monkeypatch.chdir(tmp_path / "driver")
    paths = {"format": "mvtec", "root": name if hidden == "data" else str(data), "categories": ["tile"]}
    config = sweep_config(tmp_path, **paths)
    args = ["sweep", str(config), "--backend", "ray", "--address", cluster.address]
    if hidden == "output":
        args += ["--output", name]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    what = f"data.root {name}" if hidden == "data" else f"output {name}/tiny"
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"adrun: error: node {WORKER_IP} (")
    assert lines[0].endswith(
        f"): {what} does not exist there (a relative path resolves in the folder where `ray start` ran on "
        "that node); every node must see the same paths (see docs/many-machines.md)"
    )
    exp = target / "tiny" if hidden == "output" else tmp_path / "results" / "tiny"
    assert not (exp / "runs").exists()  # failed before the first cell
    assert not list(exp.glob(".adrun-preflight-*"))


@pytest.mark.slow
@pytest.mark.ray
def test_killed_driver_leaves_whole_files_and_the_rerun_resumes(tmp_path, cluster, reference):
    config = sweep_config(tmp_path)
    exp = tmp_path / "results" / "tiny"
    proc = adrun("sweep", config, "--backend", "ray", "--address", cluster.address)

    def one_done_one_running():
        states = [(r or {}).get("status") for r in (record(exp, c) for c in CATEGORIES)]
        return "success" in states and "running" in states

    wait_for(one_done_one_running)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    finished = {
        c: (exp / "runs/patchcore" / c / "seed-42" / "record.json").read_bytes()
        for c in CATEGORIES
        if (record(exp, c) or {}).get("status") == "success"
    }
    for path in exp.rglob("*.json"):
        json.loads(path.read_text())  # whole, not torn
    assert not list(exp.rglob(".record.json.*"))

    rerun = adrun("sweep", config, "--backend", "ray", "--address", cluster.address)
    out, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, out
    for category, before in finished.items():
        assert f"skip patchcore / {category}" in out
        assert (exp / "runs/patchcore" / category / "seed-42" / "record.json").read_bytes() == before
    assert out.count("skip") == len(finished) and out.count(" ok ") == 3 - len(finished)
    assert [record(exp, c)["status"] for c in CATEGORIES] == ["success"] * 3
    assert tables(exp) == tables(reference)


@pytest.mark.slow
@pytest.mark.ray
def test_losing_a_node_mid_cell_costs_that_cell_one_retry(tmp_path, cluster, reference):
    config = sweep_config(tmp_path)
    exp = tmp_path / "results" / "tiny"
    proc = adrun("sweep", config, "--backend", "ray", "--address", cluster.address)

    def running_on_worker():
        for category in CATEGORIES:
            tries = attempts(exp, category)
            state = (record(exp, category) or {}).get("status")
            if tries and tries[-1]["node"] == WORKER_IP and state == "running":
                return category
        return None

    victim = wait_for(running_on_worker)
    tries_before_kill = attempts(exp, victim)
    killed = cluster.kill_node("worker")
    assert record(exp, victim)["status"] == "running"  # caught in the middle of the cell
    cluster.add_node("replacement", "127.0.0.4", cpus=1)  # the cluster stays two nodes for later tests
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert tries_before_kill[0]["pid"] in killed  # the worker process running the cell died with its node
    assert [record(exp, c)["status"] for c in CATEGORIES] == ["success"] * 3
    assert {c: record(exp, c)["attempts"] for c in CATEGORIES} == {c: 2 if c == victim else 1 for c in CATEGORIES}
    tries = attempts(exp, victim)
    assert tries[0]["node"] == WORKER_IP and tries[1]["node"] != WORKER_IP
    assert f"retry patchcore / {victim}: attempt 2 on {tries[1]['node']}" in out
    assert tables(exp) == tables(reference)


@pytest.mark.slow
@pytest.mark.ray
def test_first_sigint_records_interrupted_as_locally(tmp_path, cluster):
    config = sweep_config(tmp_path)
    exp = tmp_path / "results" / "tiny"
    proc = adrun("sweep", config, "--backend", "ray", "--address", cluster.address)
    wait_for(lambda: any((record(exp, c) or {}).get("status") == "running" for c in CATEGORIES))
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=300)  # Ray's shutdown is slow on loaded shared cores
    assert proc.returncode == 130, out
    states = {c: (record(exp, c) or {}).get("status") for c in CATEGORIES}
    # The sweep stopped early and left nothing "running". On loaded cores the running cell
    # may finish before the interrupt reaches it: then it is a success, and the rest never start.
    assert "running" not in states.values() and list(states.values()) != ["success"] * 3, states
    assert set(states.values()) <= {"interrupted", "success", None}, states
    assert "run the same command again to resume" in out
    rerun = adrun("sweep", config, "--backend", "ray", "--address", cluster.address)
    out, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, out
    assert [record(exp, c)["status"] for c in CATEGORIES] == ["success"] * 3


@pytest.mark.slow
@pytest.mark.ray
def test_a_driver_without_the_token_is_refused(tmp_path, cluster):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "adrun.cli",
            "sweep",
            str(sweep_config(tmp_path)),
            "--backend",
            "ray",
            "--address",
            cluster.address,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"adrun: error: no Ray cluster at {cluster.address} ("), lines
    assert "if the cluster uses token authentication, set RAY_AUTH_MODE=token and its token" in lines[0]
    assert not (tmp_path / "results" / "tiny" / "runs").exists()


@pytest.mark.slow
@pytest.mark.ray
def test_a_cluster_without_token_authentication_gets_a_warning(tmp_path):
    """One line before the sweep, whether or not the driver itself sends a token (the head is asked)."""
    base = Path(tempfile.mkdtemp(prefix="adrun-ray-", dir="/tmp"))
    home = base / "home"
    open_cluster = LocalCluster(base, env={"HOME": str(home), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}, auth=False)
    config = sweep_config(tmp_path, categories=["tile"])
    try:
        address = open_cluster.start_head(cpus=1)
        warning = (
            f"warning: the Ray cluster at {address} runs without token authentication: anyone who can "
            "reach its port can run code there as its user; start every node with RAY_AUTH_MODE=token"
        )
        for driver in ({"RAY_AUTH_MODE": "disabled"}, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "x" * 32}):
            env = {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}, **driver, "COLUMNS": "250"}
            done = subprocess.run(
                [sys.executable, "-m", "adrun.cli", "sweep", str(config), "--backend", "ray", "--address", address],
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert done.returncode == 0, done.stdout + done.stderr
            assert done.stdout.count(warning) == 1, done.stdout
    finally:
        open_cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_cells_get_a_gpu_each_or_a_split_of_the_smallest_cpu_node():
    from adrun.backends.ray import Node, resources
    from adrun.errors import ClusterError

    cpu = [Node("a" * 56, "10.0.0.1", 0, 0), Node("b" * 56, "10.0.0.2", 8, 0), Node("c" * 56, "10.0.0.3", 16, 0)]
    assert resources(cpu, jobs=1) == {"num_gpus": 0, "num_cpus": 8}
    assert resources(cpu, jobs=3) == {"num_gpus": 0, "num_cpus": 2}
    assert resources(cpu, jobs=64) == {"num_gpus": 0, "num_cpus": 1}
    assert resources([*cpu, Node("d" * 56, "10.0.0.4", 8, 4)], jobs=1) == {"num_gpus": 1, "num_cpus": 1}
    with pytest.raises(ClusterError, match="no node with a CPU or GPU"):
        resources(cpu[:1], jobs=1)
