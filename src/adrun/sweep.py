"""Run many cells: plan (validate everything first), skip finished ones, run the rest, refresh tables.

A cell whose record says ``success`` with the same key (a hash of its resolved
config and adrun's version) is skipped; any other record means it runs again.
A failing cell is recorded and the sweep goes on; an error every later cell would
hit too (a full disk) stops it (``adrun.errors.aborts_sweep``). The first Ctrl-C
stops the running cells (recorded ``interrupted``) and leaves the tables valid; a
second one exits at once. Every file is written atomically, so either way all files
are whole. Where the cells run is a backend (``adrun.backends``): in this process,
in ``jobs`` worker processes, or as Ray tasks on a cluster.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adrun import data, preflight
from adrun.backends import Backend, Event
from adrun.config import Cell, Experiment, expand, experiment_dir
from adrun.errors import ConfigError
from adrun.records import RECORD, run_dir

if TYPE_CHECKING:
    from adrun.backends.ray import Cluster

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
    root, categories = data.prepare(experiment, exp_dir)
    _check_output(exp_dir, root)
    cells = expand(experiment, categories, smoke=smoke)
    if only:
        cells = [c for c in cells if any(fnmatch(f"{c.label}/{c.category}", pattern) for pattern in only)]
        if not cells:
            raise ConfigError(f"--only {' '.join(only)}: matches no cell; cells are named <label>/<category>")
    for cell in cells:
        if cell.model.name == "efficient_ad" and cell.train_batch_size != 1:
            raise ConfigError(
                f"{cell.label}: EfficientAd trains with batch size 1 (paper setting, enforced by anomalib); "
                "set train_batch_size: 1 on that model entry"
            )
    preflight.require(experiment, cells, root)
    return Plan(experiment, exp_dir, root, cells, smoke)


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


def backend_for(name: str, jobs: int = 1, address: str | None = None, cluster: Cluster | None = None) -> Backend:
    """``local`` with one job: serial; with more: a pool of ``jobs`` processes; ``ray``: Ray tasks."""
    if name not in BACKENDS:
        raise ConfigError(f"backend {name!r}: choose from {', '.join(BACKENDS)}")
    if name == "ray":
        from adrun.backends.ray import RayBackend

        return RayBackend(jobs, address=address, cluster=cluster)
    if jobs > 1:
        from adrun.backends.process import ProcessBackend

        return ProcessBackend(jobs)
    from adrun.backends.serial import SerialBackend

    return SerialBackend()


def execute(
    the_plan: Plan,
    force: bool = False,
    on_event: Callable[[Event], None] | None = None,
    fail_fast: bool = False,
    jobs: int = 1,
    backend: str = "local",
    address: str | None = None,
    cluster: Cluster | None = None,
) -> Outcome:
    """Run the plan's cells; returns the outcome after refreshing the tables.

    ``backend`` is ``local`` (in this process, or ``jobs`` worker processes) or ``ray``
    (tasks on the cluster at ``address``, or on ``cluster`` if already connected; ``jobs``
    cells per node at once). ``on_event`` sees every cell's ``Event``: ``skipped``, then
    ``started`` (again for a Ray retry) and ``finished`` with its record. Raises the
    aborting error (a full disk) or ``KeyboardInterrupt`` once the tables are rewritten.
    """
    from adrun.tables import write_tables

    runner = backend_for(backend, jobs, address=address, cluster=cluster)
    outcome = Outcome()
    todo = []
    for cell in the_plan.cells:
        if not force and is_done(cell, the_plan.exp_dir):
            outcome.skipped.append(cell)
            if on_event:
                on_event(Event("skipped", cell, 0, len(the_plan.cells), record=_record_of(cell, the_plan.exp_dir)))
        else:
            todo.append(cell)

    def book(event: Event) -> bool:
        """Book one event; True when the sweep should start no new cell (fail fast)."""
        if event.kind == "finished" and event.record is not None:
            if event.status == "success":
                outcome.records.append(event.record)
            elif event.status == "interrupted":
                outcome.interrupted.append(event.record)
            else:
                outcome.failed.append(event.record)
        if on_event:
            on_event(event)
        return fail_fast and event.kind == "finished" and event.status == "failed"

    try:
        runner.run(todo, the_plan.root, the_plan.exp_dir, book)
    finally:
        outcome.tables = write_tables(the_plan.exp_dir)
    if outcome.interrupted:
        raise KeyboardInterrupt
    return outcome


def _record_of(cell: Cell, exp_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir(exp_dir, cell.label, cell.category) / RECORD).read_text(encoding="utf-8"))
