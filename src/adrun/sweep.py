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

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adrun import data, preflight
from adrun.backends import Backend, Event
from adrun.config import Cell, Experiment, expand, experiment_dir
from adrun.errors import AdrunError, ConfigError, DataError
from adrun.models import spec_of
from adrun.records import RECORD, now, run_dir, write_plan

if TYPE_CHECKING:
    from adrun.backends.ray import Cluster
    from adrun.tables import Tables

BACKENDS = ("local", "ray")
LOCK = ".adrun.lock"


@dataclass
class Plan:
    experiment: Experiment
    exp_dir: Path
    root: Path
    cells: list[Cell]  # the cells to run now (after --only)
    smoke: bool = False
    planned: list[Cell] = field(default_factory=list)  # every cell of the config: what the tables show

    def __post_init__(self):
        if not self.planned:
            self.planned = list(self.cells)


@dataclass
class Outcome:
    records: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[Cell] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    interrupted: list[dict[str, Any]] = field(default_factory=list)
    tables: Tables | None = None  # what the refresh after the run wrote


def plan(
    experiment: Experiment, smoke: bool = False, only: list[str] | None = None, verify_images: bool = False
) -> Plan:
    """Resolve data, expand cells, check every cell (data, weights, teacher) before any runs.

    ``verify_images`` decodes every image in full; by default only their headers are read.
    """
    exp_dir = experiment_dir(experiment, smoke)
    _check_output(exp_dir, data.dataset_root(experiment.data, exp_dir))
    try:
        root, categories = data.prepare(experiment, exp_dir, verify_images)
    except DataError as exc:
        # The weights, teacher and imagenette may be missing too: name them in the same
        # round, as doctor does, rather than one problem per attempt.
        raise DataError("\n".join(_with_model_problems(experiment, str(exc), smoke, only))) from None
    cells = planned = expand(experiment, categories, smoke=smoke)
    for cell in cells:
        run_dir(exp_dir, cell.folder)  # every folder is checked before anything is written
    cells = select(cells, only)
    broken = [p for cell in cells for p in spec_of(cell.model).cell_problems(cell)]
    if broken:
        raise ConfigError("\n".join(dict.fromkeys(broken)))
    preflight.require(experiment, cells, root)
    return Plan(experiment, exp_dir, root, cells, smoke, planned)


def matches(cell: Cell, pattern: str) -> bool:
    """Whether ``--only PATTERN`` picks ``cell``.

    PATTERN is ``<label>/<category>`` or just ``<label>``. The label part is taken
    literally first (grid labels hold ``[``, a glob character), then as a glob against
    the label and against the model's name, so ``<model>/t*`` picks every such
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
        names = list(dict.fromkeys(f"{c.label}/{c.category}" for c in cells))  # once, however many seeds
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
    reports = preflight.check_cells(
        cells, data.dataset_root(experiment.data, experiment_dir(experiment, smoke)), experiment._source
    )
    models = [p for r in reports for name, c in r.checks.items() if name != "dataset" for p in c.problems]
    return list(dict.fromkeys([*lines, *models]))


def _check_output(exp_dir: Path, root: Path) -> None:
    # Results written into the dataset would show up as new categories or images.
    exp, data_root = exp_dir.resolve(), root.resolve()
    if exp == data_root or data_root in exp.parents:
        raise ConfigError(f"output {exp_dir} is inside the dataset root {root}; set output: to a folder outside it")
    for folder in (exp_dir, *exp_dir.parents):
        if folder.exists() and not folder.is_dir():
            raise ConfigError(
                f"output {exp_dir}: {folder} is a file, not a folder; set output: (or --output) to a folder"
            )


@contextlib.contextmanager
def locked(
    experiment: Experiment, smoke: bool = False, wait: bool = False, on_wait: Callable[[str], None] | None = None
) -> Iterator[Path]:
    """Hold ``<exp_dir>/.adrun.lock`` while a sweep runs: one sweep per experiment folder.

    A second sweep gets a ``ConfigError`` naming the holder (or, with ``wait``, blocks
    until it is free). The lock is ``flock``'s, so it dies with its process, even a
    SIGKILLed one; ``--jobs`` workers and Ray tasks never take it, they run under the
    driver's. Yields the experiment folder, created here: the sweep's first write.
    """
    exp_dir = experiment_dir(experiment, smoke)
    _check_output(exp_dir, data.dataset_root(experiment.data, exp_dir))
    path = exp_dir / LOCK
    try:
        exp_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise ConfigError(
            f"output {exp_dir}: cannot write there ({exc.strerror or exc}); set output: "
            "(or --output) to a folder you can write"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(path)
            if not wait:
                raise ConfigError(
                    f"{exp_dir}: another adrun sweep ({holder}) is running on this experiment folder; "
                    "wait for it to finish, or pass --wait to start when it does"
                ) from None
            if on_wait:
                on_wait(holder)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {now()}\n".encode())
        yield exp_dir
    finally:
        os.close(fd)  # releases the lock


def _holder(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        text = ""
    return text or "pid unknown"


def is_done(cell: Cell, exp_dir: Path) -> bool:
    path = run_dir(exp_dir, cell.folder) / RECORD
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


def _wall_seconds(record: dict[str, Any]) -> float | None:
    """A cell's wall time from its record: start to end (build, fit, test, sample grid)."""
    from datetime import datetime

    try:
        return (
            datetime.fromisoformat(record["finished_at"]) - datetime.fromisoformat(record["started_at"])
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
    # The tables show exactly these cells, whatever else lies on disk from earlier runs.
    write_plan(the_plan.exp_dir, the_plan.planned, the_plan.smoke)
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
    return json.loads((run_dir(exp_dir, cell.folder) / RECORD).read_text(encoding="utf-8"))
