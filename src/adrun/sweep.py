"""Run many cells: plan (validate everything first), skip finished ones, run the rest, refresh tables.

A cell whose record says ``success`` with the same key (a hash of its resolved
config and adrun's version) is skipped; any other record means it runs again.
A failing cell is recorded and the sweep goes on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from adrun import data, preflight
from adrun.config import Cell, Experiment, expand, experiment_dir
from adrun.errors import ConfigError
from adrun.records import RECORD, run_dir


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


def execute(
    the_plan: Plan,
    force: bool = False,
    on_start: Callable[[Cell, int, int], None] | None = None,
    on_end: Callable[[Cell, dict | None, str], None] | None = None,
    fail_fast: bool = False,
) -> Outcome:
    """Run the plan's cells in order; returns the outcome after refreshing the tables."""
    from adrun.run import run_cell
    from adrun.tables import write_tables

    outcome = Outcome()
    total = len(the_plan.cells)
    for i, cell in enumerate(the_plan.cells, start=1):
        if not force and is_done(cell, the_plan.exp_dir):
            outcome.skipped.append(cell)
            if on_end:
                on_end(cell, None, "skipped")
            continue
        if on_start:
            on_start(cell, i, total)
        try:
            record = run_cell(cell, the_plan.root, the_plan.exp_dir)
        except KeyboardInterrupt:
            write_tables(the_plan.exp_dir)
            raise
        except Exception:
            record = json.loads((run_dir(the_plan.exp_dir, cell.label, cell.category) / RECORD).read_text())
            outcome.failed.append(record)
            if on_end:
                on_end(cell, record, "failed")
            if fail_fast:
                break
            continue
        outcome.records.append(record)
        if on_end:
            on_end(cell, record, "success")
    outcome.tables = write_tables(the_plan.exp_dir)
    return outcome

