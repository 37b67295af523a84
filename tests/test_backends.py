"""The backends: one failure rule and one record shape under serial, ``--jobs 2`` and Ray;
``--jobs`` keeps its workers and hands out GPUs; no import cycle in the package.

The parity sweeps go through the real CLI (typer's CliRunner, in this process, so that a
test can step in between the plan and the first cell). Worker processes and Ray nodes
are separate processes, so what they must see is arranged on disk or in their start-up:
a full disk and a cell held before its checkpoint are ``tests/hooks/sitecustomize.py``
(every process with that folder on PYTHONPATH loads it), missing weights are a weights file that preflight read and that is
gone by the time the cells build their models.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest
from conftest import tiny_raw, write_yaml
from ray_cluster import LocalCluster
from sweeps import CATEGORIES, adrun, record, sweep_config, tables, wait_for
from typer.testing import CliRunner

from adrun.cli import app

SRC = Path(__file__).resolve().parents[1] / "src"
HOOKS = Path(__file__).resolve().parent / "hooks"
BACKENDS = {"serial": [], "jobs2": ["--jobs", "2"], "ray": ["--backend", "ray"]}
ENOSPC_LINE = f"OSError: [Errno 28] {os.strerror(28)}"


def _hook():
    spec = importlib.util.spec_from_file_location("adrun_test_hooks", HOOKS / "sitecustomize.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hooks = _hook()


def hooked_pythonpath() -> str:
    """PYTHONPATH with tests/hooks first: processes started with it load the full-disk and hold hooks."""
    return os.pathsep.join(p for p in (str(HOOKS), os.environ.get("PYTHONPATH")) if p)


# --------------------------------------------------------------------------- the import graph


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / "adrun").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the adrun modules it imports anywhere in its source (lazy and type-only imports too)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                for alias in node.names:
                    target = f"{base}.{alias.name}"
                    if target in modules:
                        graph[name].add(target)
                    elif base in modules:
                        graph[name].add(base)
        graph[name].discard(name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}  # "open" while on the path, "done" after

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt, [*path, nxt])):
                return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_no_import_cycle_and_no_backend_imports_the_sweep():
    graph = import_graph()
    assert {
        "adrun.sweep",
        "adrun.backends.base",
        "adrun.backends.serial",
        "adrun.backends.process",
        "adrun.backends.ray",
        "adrun.backends.worker",
    } <= set(graph)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    for name, imports in graph.items():
        if name.startswith("adrun.backends"):
            assert "adrun.sweep" not in imports and "adrun.cli" not in imports, name
    # ray is imported in backends/ray.py only, and only inside functions (lazily).
    for name, path in _modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        lazy = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) for n in ast.walk(f)}
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            if any(n == "ray" or n.startswith("ray.") for n in names):
                assert name == "adrun.backends.ray" and id(node) in lazy, f"{name} imports ray"
    for name in graph:  # and every module imports, in this order, without a cycle at import time
        importlib.import_module(name)


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


# --------------------------------------------------------------------------- the failure rule


def test_only_a_full_disk_aborts_a_sweep_and_errors_keep_their_class_across_processes():
    from adrun import errors

    assert errors.aborts_sweep(errors.DiskFullError("x"))
    for exc in (
        errors.WeightsError("x"),
        errors.DataError("x"),
        errors.AdrunError("x"),
        ValueError("x"),
        OSError(28, "No space left on device"),
        KeyboardInterrupt(),
    ):
        assert not errors.aborts_sweep(exc), exc
    wire = json.loads(json.dumps(errors.to_wire(errors.WeightsError("backbone weights file w.pth does not exist"))))
    back = errors.from_wire(wire)
    assert type(back) is errors.WeightsError and str(back) == "backbone weights file w.pth does not exist"
    assert type(errors.from_wire(errors.to_wire(errors.DiskFullError("full")))) is errors.DiskFullError
    assert type(errors.from_wire({"type": "NoSuchError", "message": "m"})) is errors.AdrunError


def test_a_dead_cell_record_has_the_shape_of_a_real_one(tmp_path):
    from adrun.backends.base import dead_record
    from adrun.config import expand, load_experiment
    from adrun.run import base_record

    experiment = load_experiment(None, raw=tiny_raw(tmp_path))
    cell = expand(experiment, ["tile"])[0]
    dead = dead_record(
        cell,
        tmp_path,
        "worker process killed by SIGKILL",
        started_at="2020-01-01T00:00:00+00:00",
        pid=123,
        cuda_visible_devices="1",
    )
    assert set(base_record(cell, tmp_path)) <= set(dead)
    assert dead["status"] == "failed" and dead["error"] == "worker process killed by SIGKILL"
    assert dead["started_at"] == "2020-01-01T00:00:00+00:00" and dead["finished_at"]
    assert (dead["key"], dead["pid"], dead["cuda_visible_devices"]) == (cell.key, 123, "1")


# --------------------------------------------------------------------------- Ctrl-C at a record write


def _tiny_cells(tmp_path, categories):
    """The tiny Patchcore cells of ``categories``, their data made; returns (cells, root, exp_dir)."""
    from adrun.config import expand, load_experiment
    from adrun.data import prepare

    raw = tiny_raw(tmp_path / "results", categories=categories)
    raw["models"] = raw["models"][:1]
    experiment = load_experiment(None, raw=raw)
    exp_dir = tmp_path / "results" / "tiny"
    root, found = prepare(experiment, exp_dir)
    return expand(experiment, found), root, exp_dir


def _interrupting_sink(when):
    """write_record, except that the first write ``when(record)`` picks raises KeyboardInterrupt
    first: the one SIGINT of a Ctrl-C landing inside that write."""
    from adrun.records import write_record

    hit = []

    def sink(folder, record):
        if not hit and when(record):
            hit.append(dict(record))
            raise KeyboardInterrupt
        write_record(folder, record)

    return sink, hit


def test_ctrl_c_while_the_running_record_is_written_ends_the_cell_interrupted(tmp_path):
    """The signal lands in the first write, before run_cell's own try: CI once saw such a
    cell booked as finished with its "running" record (and the CLI crash on it)."""
    from adrun.backends.base import run_one

    (cell,), root, exp_dir = _tiny_cells(tmp_path, ["tile"])
    sink, hit = _interrupting_sink(lambda record: record["status"] == "running")
    result = run_one(cell, root, exp_dir, sink=sink)
    assert hit and result.stopped
    assert result.status == "interrupted" and result.record["error"] == "interrupted by the user"
    on_disk = record(exp_dir, "tile")
    assert on_disk["status"] == "interrupted" and on_disk["finished_at"]
    assert on_disk["started_at"] == hit[0]["started_at"] and on_disk["key"] == cell.key


@pytest.mark.slow
def test_ctrl_c_while_a_finished_record_is_written_keeps_the_cell_and_stops_the_sweep(tmp_path, monkeypatch):
    import functools

    from adrun.backends import base, serial

    cells, root, exp_dir = _tiny_cells(tmp_path, ["tile", "leather"])
    sink, hit = _interrupting_sink(lambda record: record["status"] == "success")
    monkeypatch.setattr(serial, "run_one", functools.partial(base.run_one, sink=sink))
    events = []
    with pytest.raises(KeyboardInterrupt):
        serial.SerialBackend().run(cells, root, exp_dir, lambda event: events.append(event) and False)
    assert hit and [(e.kind, e.cell.category, e.status) for e in events] == [
        ("started", "tile", "running"),
        ("finished", "tile", "success"),
    ]
    tile = record(exp_dir, "tile")  # whole: written again after the cut write
    assert tile["status"] == "success" and tile["seconds"]["total"] > 0 and tile["metrics"]["pixel_AUROC"] > 0
    assert record(exp_dir, "leather") is None  # no cell after the Ctrl-C


# --------------------------------------------------------------------------- GPU lists


def _cells(tmp_path, *device_lists):
    from adrun.config import expand, load_experiment

    raw = tiny_raw(tmp_path)
    for model, devices in zip(raw["models"], device_lists, strict=False):
        model["trainer"] = {**model.get("trainer", {}), "devices": devices}
    return expand(load_experiment(None, raw=raw), ["tile"])


def test_jobs_hand_out_the_listed_gpus_through_cuda_visible_devices(tmp_path):
    from adrun.backends.process import gpus
    from adrun.errors import ConfigError
    from adrun.registry import trainer_arguments

    counts = _cells(tmp_path, 1, 1)
    assert gpus(counts, visible="") == []  # CUDA_VISIBLE_DEVICES="" hides every GPU: none to hand out
    assert gpus(counts, visible="3,4") == ["3", "4"]  # no list: every visible GPU, round robin
    with pytest.raises(ConfigError, match=r"CUDA_VISIBLE_DEVICES= shows no GPU"):  # a list names some: say so
        gpus(_cells(tmp_path, [1, 0], 1), visible="")
    cells = _cells(tmp_path, [1, 0], [1, 0])
    assert gpus(cells, visible="4,5") == ["5", "4"]  # indices among the visible ones, as Lightning reads them
    assert gpus(_cells(tmp_path, [2], 1), visible="0,1,2,3") == ["2"]
    with pytest.raises(ConfigError, match=r"different GPU lists \(patchcore: \[1, 0\], efficient_ad: \[2\]\)"):
        gpus(_cells(tmp_path, [1, 0], [2]), visible="0,1,2")
    # Serial: the list goes to Lightning as it is; a worker pinned to one GPU runs with that one.
    assert trainer_arguments(cells[0])["devices"] == [1, 0]
    assert trainer_arguments(cells[0], devices=1)["devices"] == 1


@pytest.mark.parametrize("bad", [[], [0, 0], [-1]])
def test_a_bad_gpu_list_is_one_config_error(tmp_path, bad):
    raw = tiny_raw(tmp_path)
    raw["trainer"] = {"devices": bad}
    result = CliRunner().invoke(app, ["sweep", str(write_yaml(tmp_path / "c.yaml", raw))])
    assert result.exit_code == 2
    assert "trainer.devices" in result.stderr and "GPU indices" in result.stderr


# --------------------------------------------------------------------------- --jobs: a pool of workers


@pytest.mark.slow
def test_jobs_reuse_two_workers_each_with_its_own_gpu(tmp_path, monkeypatch, reference):
    """On CPU: CUDA_VISIBLE_DEVICES=5,7 and trainer.devices [1, 0]: worker 1 sees GPU 7 only,
    worker 2 GPU 5 only, and the two of them run all three cells."""
    raw = tiny_raw(tmp_path / "results", categories=CATEGORIES)
    raw["models"] = raw["models"][:1]
    raw["models"][0]["trainer"] = {"accelerator": "cpu", "devices": [1, 0]}
    config = write_yaml(tmp_path / "c.yaml", raw)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    proc = adrun("sweep", config, "--jobs", "2")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    exp = tmp_path / "results" / "tiny"
    records = {c: record(exp, c) for c in CATEGORIES}
    assert {r["status"] for r in records.values()} == {"success"}
    pid_gpu = {(r["pid"], r["cuda_visible_devices"]) for r in records.values()}
    assert len(pid_gpu) == 2 and {gpu for _, gpu in pid_gpu} == {"7", "5"}, pid_gpu  # 2 processes, 3 cells
    assert records["tile"]["cuda_visible_devices"] == "7" and records["leather"]["cuda_visible_devices"] == "5"
    assert records["tile"]["config"]["trainer"]["devices"] == [1, 0]  # the record keeps the config as written
    for category in CATEGORIES:  # the same fits as the serial reference (whose trainer says devices 1)
        assert records[category]["metrics"] == record(reference, category)["metrics"]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.slow
def test_a_worker_killed_mid_cell_fails_that_cell_and_a_fresh_worker_runs_the_rest(tmp_path):
    config = sweep_config(tmp_path)
    exp = tmp_path / "results" / "tiny"
    proc = adrun("sweep", config, "--jobs", "2")
    log = exp / "runs/patchcore/tile/seed-42/log.txt"
    wait_for(lambda: log.exists() and "GPU available" in log.read_text())  # tile's fit has begun
    victim = record(exp, "tile")["pid"]
    os.kill(victim, signal.SIGKILL)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 1, out
    tile, leather, grid = (record(exp, c) for c in CATEGORIES)
    assert tile["status"] == "failed" and tile["pid"] == victim
    assert tile["error"] == "worker process killed by SIGKILL (out of memory?) while running the cell"
    assert leather["status"] == grid["status"] == "success"
    assert grid["pid"] != victim
    assert "1 cell failed" in out and "patchcore / tile: worker process killed by SIGKILL" in out
    rerun = adrun("sweep", config, "--jobs", "2")
    out, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0 and out.count("skip") == 2, out


@pytest.mark.slow
def test_jobs_first_sigint_interrupts_the_running_cells_second_exits_at_once(tmp_path, monkeypatch):
    # Both cells wait before their checkpoint until the signal (tests/hooks): neither can
    # finish first, however the two workers' start-ups and the shared cores fall.
    (tmp_path / hooks.HOLD).write_text("")
    monkeypatch.setenv("PYTHONPATH", hooked_pythonpath())
    config = sweep_config(tmp_path)
    exp = tmp_path / "results" / "tiny"

    def held() -> list[int]:
        return sorted(int(p.name.removeprefix("held-")) for p in tmp_path.glob("held-*"))

    proc = adrun("sweep", config, "--jobs", "2")
    workers = wait_for(lambda: len(found := held()) == 2 and found)
    assert workers == sorted(record(exp, c)["pid"] for c in CATEGORIES[:2])
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 130, out
    assert "run the same command again to resume" in out
    assert [(record(exp, c) or {}).get("status") for c in CATEGORIES] == ["interrupted", "interrupted", None]
    assert record(exp, "tile")["error"] == "interrupted by the user"
    wait_for(lambda: not any(_alive(pid) for pid in workers), timeout=30)

    for path in tmp_path.glob("held-*"):
        path.unlink()
    second = adrun("sweep", config, "--jobs", "2")
    workers = wait_for(lambda: len(found := held()) == 2 and found)
    second.send_signal(signal.SIGINT)
    second.send_signal(signal.SIGINT)
    start = time.monotonic()
    second.communicate(timeout=60)
    assert second.returncode == 130 and time.monotonic() - start < 30
    wait_for(lambda: not any(_alive(pid) for pid in workers), timeout=30)
    for path in exp.rglob("*.json"):
        json.loads(path.read_text())  # whole, not torn


@pytest.mark.slow
def test_sigkill_of_a_jobs_sweep_takes_its_workers_along_and_the_rerun_resumes(tmp_path, reference):
    config = sweep_config(tmp_path)
    exp = tmp_path / "results" / "tiny"
    proc = adrun("sweep", config, "--jobs", "2")

    def one_done_one_running():
        states = [(record(exp, c) or {}).get("status") for c in CATEGORIES]
        return "success" in states and "running" in states

    wait_for(one_done_one_running)
    workers = {r["pid"] for c in CATEGORIES if (r := record(exp, c)) and r["status"] == "running"}
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    wait_for(lambda: not any(_alive(pid) for pid in workers), timeout=30)  # PR_SET_PDEATHSIG
    for path in exp.rglob("*.json"):
        json.loads(path.read_text())
    done = [c for c in CATEGORIES if (record(exp, c) or {}).get("status") == "success"]
    rerun = adrun("sweep", config, "--jobs", "2")
    out, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, out
    assert out.count("skip") == len(done)
    assert tables(exp) == tables(reference)


# --------------------------------------------------------------------------- parity of the three backends


@pytest.fixture(scope="module")
def cluster():
    """Two nodes on loopback, as in test_ray.py; their workers load tests/hooks (the full disk)."""
    base = Path(tempfile.mkdtemp(prefix="adrun-ray-", dir="/tmp"))
    home = base / "home"
    env = {
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / "cache"),
        "TORCH_HOME": str(home / "torch"),
        "HF_HOME": str(home / "hf"),
        "HF_HUB_OFFLINE": "1",
        "TQDM_DISABLE": "1",
        "PYTHONPATH": hooked_pythonpath(),
    }
    local = LocalCluster(base, env=env)
    try:
        local.start_head(cpus=1)
        local.add_node("worker", "127.0.0.3", cpus=1)
        with local.driver():  # the sweeps below join with the cluster's token, as in test_ray.py
            yield local
    finally:
        local.stop()
        shutil.rmtree(base, ignore_errors=True)


def _backend(request, name: str) -> list[str]:
    if name != "ray":
        return BACKENDS[name]
    return [*BACKENDS[name], "--address", request.getfixturevalue("cluster").address]


def _files(exp: Path, category: str) -> list[str]:
    folder = exp / "runs" / "patchcore" / category / "seed-42"
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != "attempts.jsonl")


PARITY = [
    pytest.param(name, marks=[pytest.mark.slow, *([pytest.mark.ray] if name == "ray" else [])]) for name in BACKENDS
]


@pytest.mark.parametrize("backend", PARITY)
def test_a_failing_cell_fails_alone_under_every_backend(tmp_path, request, backend):
    from adrun import synthetic

    root = synthetic.make_dataset(
        tmp_path / "data", ["tile", "leather"], seed=42, image_size=64, n_train=6, n_test_good=3, n_test_defect=1
    )
    # PNGs cut short: their headers are whole, so the preflight (headers only) lets them
    # through, and the cell fails when it decodes them.
    for png in (root / "leather/train/good").glob("*.png"):
        png.write_bytes(png.read_bytes()[:100])
    config = sweep_config(tmp_path, format="mvtec", root=str(root), categories=["tile", "leather"])
    result = CliRunner().invoke(app, ["sweep", str(config), *_backend(request, backend)])
    assert result.exit_code == 1, result.output
    exp = tmp_path / "results" / "tiny"
    tile, leather = record(exp, "tile"), record(exp, "leather")
    assert tile["status"] == "success" and leather["status"] == "failed"
    assert leather["error"] == "OSError: image file is truncated"
    assert "1 cell failed" in result.output and result.stderr == ""


@pytest.mark.parametrize("backend", PARITY)
def test_missing_weights_on_a_node_fail_each_cell_and_do_not_read_disk_full(tmp_path, request, monkeypatch, backend):
    """Preflight reads the weights file on the driver; by the time a cell builds its model
    (in this process, in a worker, on a Ray node) the file is gone: every cell fails with
    that WeightsError, the sweep goes on, exit 1."""
    from test_weights import save, timm_state

    from adrun import sweep

    weights = save(timm_state(), tmp_path / "resnet18.pth")
    raw = tiny_raw(tmp_path / "results", categories=CATEGORIES)
    raw["models"] = raw["models"][:1]
    raw["models"][0].update(pre_trained=True, weights=str(weights))
    config = write_yaml(tmp_path / "c.yaml", raw)
    real_plan = sweep.plan

    def plan_then_lose_the_file(*args, **kwargs):
        the_plan = real_plan(*args, **kwargs)
        weights.unlink()
        return the_plan

    monkeypatch.setattr(sweep, "plan", plan_then_lose_the_file)
    result = CliRunner().invoke(app, ["sweep", str(config), *_backend(request, backend)])
    assert result.exit_code == 1, result.output
    exp = tmp_path / "results" / "tiny"
    for category in CATEGORIES:
        failed = record(exp, category)
        assert failed["status"] == "failed", failed
        assert failed["error"] == f"WeightsError: weights file {weights} does not exist", failed["error"]
    assert "3 cells failed" in result.output and result.stderr == ""


@pytest.mark.parametrize("backend", PARITY)
def test_a_full_disk_stops_the_sweep_under_every_backend(tmp_path, request, monkeypatch, backend):
    """Every checkpoint write fails with ENOSPC: the first cell to hit it stops the sweep.
    Cells already running finish (and hit it too); no cell starts after it; exit 2 and one
    line naming a cell. Serial ran one cell, --jobs 2 two at once, Ray two at once (one per
    node); on Ray a node may start a queued cell before the driver hears of the full disk:
    the driver cancels it, recorded as interrupted, and it reruns on resume (under load it
    may reach its checkpoint first and fail on the full disk too)."""
    (tmp_path / hooks.MARKER).write_text("")
    monkeypatch.setattr(os, "replace", hooks.hooked_replace)  # this process (serial)
    monkeypatch.setenv("PYTHONPATH", hooked_pythonpath())
    config = sweep_config(tmp_path)
    result = CliRunner().invoke(app, ["sweep", str(config), *_backend(request, backend)])
    assert result.exit_code == 2, result.output
    exp = tmp_path / "results" / "tiny"
    ran = [c for c in CATEGORIES if record(exp, c) is not None]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    named = lines[0].removeprefix("adrun: error: no space left on device while running patchcore/").split(";")[0]
    assert lines[0].endswith(f"; free space under {exp} or set output: elsewhere, then rerun to resume")
    outcome = {c: (record(exp, c)["status"], record(exp, c)["error"]) for c in ran}
    failed = [c for c in ran if outcome[c] == ("failed", ENOSPC_LINE)]
    cancelled = [c for c in ran if outcome[c] == ("interrupted", "cancelled: the sweep stopped")]
    if backend == "ray":
        # A queued cell a node started before the driver heard is cancelled, or, on a
        # loaded machine, gets as far as its own checkpoint and fails the same way.
        assert failed[:2] == ["tile", "leather"] and sorted(failed + cancelled) == sorted(ran), outcome
    else:
        assert failed == {"serial": ["tile"], "jobs2": ["tile", "leather"]}[backend], outcome
        assert cancelled == [], outcome
    for category in failed:
        assert _files(exp, category) == ["log.txt", "record.json"]  # no checkpoint, whole or partial
    assert not list(exp.rglob("*.ckpt*")) and not list(exp.rglob(".*.tmp"))
    assert named in failed
    assert (exp / "pixel_auroc.csv").exists()
