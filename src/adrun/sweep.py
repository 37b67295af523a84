"""Run many cells: plan (validate everything first), skip finished ones, run the rest, refresh tables.

A cell whose record says ``success`` with the same key (a hash of its resolved
config and adrun's version) is skipped; any other record means it runs again.
A failing cell is recorded and the sweep goes on. The first Ctrl-C stops the
current cell (recorded ``interrupted``) and leaves the tables valid; a second one
exits at once. Every file is written atomically, so either way all files are whole.
With ``jobs > 1`` each cell runs in its own process (``adrun.worker``); with
``backend="ray"`` each cell is a Ray task on a cluster (``adrun.ray_backend``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from adrun import data, preflight
from adrun.config import Cell, Experiment, expand, experiment_dir
from adrun.errors import AdrunError, ConfigError, DataError
from adrun.records import RECORD, run_dir

BACKENDS = ("local", "ray")


@dataclass
class Plan:
    experiment: Experiment
    exp_dir: Path
    root: Path
    cells: list[Cell]
    smoke: bool = False


@dataclass
class Outcome:
    records: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[Cell] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    interrupted: list[dict[str, Any]] = field(default_factory=list)
    tables: dict = field(default_factory=dict)


def plan(experiment: Experiment, smoke: bool = False, only: list[str] | None = None) -> Plan:
    """Resolve data, expand cells, check every cell (data, weights, teacher) before any runs."""
    exp_dir = experiment_dir(experiment, smoke)
    try:
        root, categories = data.prepare(experiment, exp_dir)
    except DataError as exc:
        # The weights, teacher and imagenette may be missing too: name them in the same
        # round, as doctor does, rather than one problem per attempt.
        raise DataError("\n".join(_with_model_problems(experiment, str(exc), smoke, only))) from None
    _check_output(exp_dir, root)
    cells = select(expand(experiment, categories, smoke=smoke), only)
    for cell in cells:
        if cell.model.name == "efficient_ad" and cell.train_batch_size != 1:
            raise ConfigError(
                f"{cell.label}: EfficientAd trains with batch size 1 (paper setting, enforced by anomalib); "
                "set train_batch_size: 1 on that model entry"
            )
    preflight.require(experiment, cells, root)
    return Plan(experiment, exp_dir, root, cells, smoke)


def matches(cell: Cell, pattern: str) -> bool:
    """Whether ``--only PATTERN`` picks ``cell``.

    PATTERN is ``<label>/<category>`` or just ``<label>``. The label part is taken
    literally first (grid labels hold ``[``, a glob character), then as a glob against
    the label and against the model's name, so ``patchcore/t*`` picks every Patchcore
    grid cell on tile.
    """
    label, _, category = pattern.rpartition("/") if "/" in pattern else (pattern, "", "*")
    label_ok = label == cell.label or fnmatchcase(cell.label, label) or fnmatchcase(cell.model.name, label)
    return label_ok and (category == cell.category or fnmatchcase(cell.category, category))


def select(cells: list[Cell], only: list[str] | None) -> list[Cell]:
    """The cells ``--only`` picks (all without it); none picked is a ``ConfigError`` listing the names."""
    if not only:
        return cells
    picked = [c for c in cells if any(matches(c, pattern) for pattern in only)]
    if not picked:
        names = [f"{c.label}/{c.category}" for c in cells]
        more = f" (and {len(names) - 20} more)" if len(names) > 20 else ""
        raise ConfigError(f"--only {' '.join(only)}: matches no cell; the cells are {', '.join(names[:20])}{more}")
    return picked


def _with_model_problems(experiment: Experiment, data_problems: str, smoke: bool, only: list[str] | None) -> list[str]:
    """The dataset's problems, then what the cells' models miss (weights, teacher, imagenette)."""
    lines = data_problems.splitlines()
    categories = experiment.data.categories
    # Without a dataset, "all" cannot be expanded; the model checks need one cell per model.
    names = ["all"] if categories == "all" else list(categories)
    try:
        cells = expand(experiment, names, smoke=smoke)
        cells = select(cells, only)
    except AdrunError:
        return lines
    reports = preflight.check_cells(cells, data.dataset_root(experiment.data, experiment_dir(experiment, smoke)),
                                    experiment._source)
    models = [p for r in reports for name, c in r.checks.items() if name != "dataset" for p in c.problems]
    return list(dict.fromkeys([*lines, *models]))


def _check_output(exp_dir: Path, root: Path) -> None:
    # Results written into the dataset would show up as new categories or images.
    exp, data_root = exp_dir.resolve(), root.resolve()
    if exp == data_root or data_root in exp.parents:
        raise ConfigError(f"output {exp_dir} is inside the dataset root {root}; set output: to a folder outside it")


def is_done(cell: Cell, exp_dir: Path) -> bool:
    path = run_dir(exp_dir, cell.label, cell.category) / RECORD
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return record.get("status") == "success" and record.get("key") == cell.key


def _record_of(cell: Cell, exp_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir(exp_dir, cell.label, cell.category) / RECORD).read_text(encoding="utf-8"))


def _wall_seconds(record: dict[str, Any]) -> float | None:
    """A cell's wall time from its record: start to end (build, fit, test, sample grid)."""
    from datetime import datetime

    try:
        return (datetime.fromisoformat(record["finished_at"]) - datetime.fromisoformat(record["started_at"])
                ).total_seconds()
    except (KeyError, TypeError, ValueError):
        total = (record.get("seconds") or {}).get("total")
        return float(total) if isinstance(total, int | float) else None


def estimate(the_plan: Plan, force: bool = False) -> tuple[float, int, int]:
    """What the cells about to run took last time: (seconds, cells with such a record, cells to run).

    Only a successful record with the cell's own key counts: same settings, same adrun.
    """
    seconds, known, todo = 0.0, 0, 0
    for cell in the_plan.cells:
        if not force and is_done(cell, the_plan.exp_dir):
            continue
        todo += 1
        try:
            record = _record_of(cell, the_plan.exp_dir)
        except (OSError, json.JSONDecodeError):
            continue
        took = _wall_seconds(record) if record.get("status") == "success" and record.get("key") == cell.key else None
        if took is not None:
            seconds += took
            known += 1
    return seconds, known, todo


class Interrupts:
    """First SIGINT: raise KeyboardInterrupt (or call ``on_first``); second: exit at once.

    Lightning ignores SIGINT while it shuts a fit down, so ``arm()`` is called again
    after each cell to take the signal back.
    """

    def __init__(self, on_first: Callable[[], None] | None = None, on_second: Callable[[], None] | None = None):
        self.count = 0
        self.on_first = on_first
        self.on_second = on_second
        self._previous = None

    def _handle(self, signum, frame):
        self.count += 1
        if self.count >= 2:
            if self.on_second:
                self.on_second()
            os._exit(130)
        if self.on_first:
            self.on_first()
        else:
            raise KeyboardInterrupt

    def arm(self) -> None:
        signal.signal(signal.SIGINT, self._handle)

    def __enter__(self):
        self._previous = signal.getsignal(signal.SIGINT)
        self.arm()
        return self

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self._previous)
        return False


def execute(
    the_plan: Plan,
    force: bool = False,
    on_start: Callable[[Cell, int, int], None] | None = None,
    on_end: Callable[[Cell, dict | None, str], None] | None = None,
    fail_fast: bool = False,
    jobs: int = 1,
    backend: str = "local",
    address: str | None = None,
) -> Outcome:
    """Run the plan's cells; returns the outcome after refreshing the tables.

    ``backend`` is ``local`` (in this process, or ``jobs`` worker processes) or ``ray``
    (tasks on the cluster at ``address``; ``jobs`` cells per node at once). With ``ray``,
    ``on_start`` is also given ``node=`` (where the cell runs) and ``attempt=`` (1, then 2
    after a retry). Raises ``KeyboardInterrupt`` after an interrupt, once the tables are rewritten.
    """
    from adrun.tables import write_tables

    if backend not in BACKENDS:
        raise ConfigError(f"backend {backend!r}: choose from {', '.join(BACKENDS)}")
    outcome = Outcome()
    todo = []
    for cell in the_plan.cells:
        if not force and is_done(cell, the_plan.exp_dir):
            outcome.skipped.append(cell)
            if on_end:
                on_end(cell, None, "skipped")
        else:
            todo.append(cell)

    def finished(cell: Cell, record: dict) -> bool:
        """Book one finished cell; True when the sweep should stop."""
        status = record.get("status")
        if status == "success":
            outcome.records.append(record)
        elif status == "interrupted":
            outcome.interrupted.append(record)
        else:
            outcome.failed.append(record)
        if on_end:
            on_end(cell, record, status)
        return status == "failed" and fail_fast

    try:
        if backend == "ray":
            from adrun import ray_backend

            ray_backend.run(the_plan, todo, jobs, on_start, finished, address=address)
        else:
            run = _serial if jobs <= 1 else _parallel
            run(the_plan, todo, jobs, on_start, finished)
    finally:
        outcome.tables = write_tables(the_plan.exp_dir)
    if outcome.interrupted:
        raise KeyboardInterrupt
    return outcome


def _serial(the_plan: Plan, todo: list[Cell], jobs: int, on_start, finished) -> None:
    from adrun.run import run_cell

    with Interrupts() as interrupts:
        for i, cell in enumerate(todo, start=1):
            if on_start:
                on_start(cell, i, len(todo))
            try:
                record = run_cell(cell, the_plan.root, the_plan.exp_dir)
            except KeyboardInterrupt:
                interrupts.arm()
                try:
                    finished(cell, _record_of(cell, the_plan.exp_dir))
                except (OSError, json.JSONDecodeError):
                    raise KeyboardInterrupt from None  # before the cell wrote its first record
                return
            except AdrunError:
                raise  # disk full and the like: every later cell would fail the same way
            except Exception:
                record = _record_of(cell, the_plan.exp_dir)
            interrupts.arm()
            if finished(cell, record):
                return


def _worker_record(cell: Cell, the_plan: Plan, returncode: int) -> dict[str, Any]:
    """The record a worker left; a worker killed mid-cell (OOM, SIGKILL) gets a failed one."""
    from adrun.records import now, write_record
    from adrun.run import base_record

    try:
        record = _record_of(cell, the_plan.exp_dir)
    except (OSError, json.JSONDecodeError):
        record = base_record(cell, the_plan.root)
    if record.get("status") == "running" or record.get("key") != cell.key:
        record.update(status="failed", error=f"worker process exited with code {returncode}", finished_at=now())
        write_record(run_dir(the_plan.exp_dir, cell.label, cell.category), record)
    return record


def _devices() -> list[str]:
    """GPU ids to hand out round robin; empty on CPU."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d for d in visible.split(",") if d.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:
        return []


def _die_with_parent() -> None:
    """In the child: get SIGKILL when the sweep process dies (Linux), so no orphan writes on."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _parallel(the_plan: Plan, todo: list[Cell], jobs: int, on_start, finished) -> None:
    devices = _devices()
    threads = max(1, (os.cpu_count() or 1) // jobs)
    running: dict[subprocess.Popen, Cell] = {}
    queue = list(todo)
    stop = {"now": False}

    def forward_interrupt():
        stop["now"] = True
        for proc in running:
            proc.send_signal(signal.SIGINT)

    def kill_all():
        for proc in running:
            proc.kill()

    with tempfile.TemporaryDirectory(prefix="adrun-jobs-") as specs, Interrupts(forward_interrupt, kill_all):
        launched = 0
        while queue or running:
            while queue and len(running) < jobs and not stop["now"]:
                cell = queue.pop(0)
                spec = Path(specs) / f"{launched}.json"
                spec.write_text(json.dumps({
                    "cell": cell.model_dump(mode="json"), "root": str(the_plan.root),
                    "exp_dir": str(the_plan.exp_dir), "threads": threads,
                }))
                env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TQDM_DISABLE": "1"}
                if devices:
                    env["CUDA_VISIBLE_DEVICES"] = devices[launched % len(devices)]
                # Own session: a terminal Ctrl-C reaches the sweep, which forwards exactly one.
                proc = subprocess.Popen(
                    [sys.executable, "-m", "adrun.worker", str(spec)], env=env, start_new_session=True,
                    preexec_fn=_die_with_parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
                running[proc] = cell
                launched += 1
                if on_start:
                    on_start(cell, launched, len(todo))
            time.sleep(0.2)
            for proc in [p for p in running if p.poll() is not None]:
                cell = running.pop(proc)
                if finished(cell, _worker_record(cell, the_plan, proc.returncode)):
                    stop["now"] = True
            if stop["now"] and not running:
                break
