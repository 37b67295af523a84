"""What an experiment folder holds: every cell's state, key, seed and times (``adrun status``).

States: ``done`` (success with the key its config gives now), ``failed``, ``interrupted``,
``running`` (a sweep is at it now, or was killed), ``stale`` (a record whose key no longer
matches its cell in the config: its settings or adrun changed since, so a sweep reruns it),
``not run`` (a cell of the config without a record) and ``not in config`` (a record
the config no longer asks for). Without a config, the keys are compared with the last
sweep's ``plan.json`` when there is one; otherwise only the records speak.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from adrun.errors import RunError
from adrun.records import read_records

PLAN = "plan.json"
STATES = {"success": "done", "failed": "failed", "interrupted": "interrupted", "running": "running"}


@dataclass
class CellState:
    label: str
    category: str
    seed: int | None
    state: str
    key: str | None
    started: str | None = None
    finished: str | None = None
    seconds: float | None = None
    error: str | None = None


def _wanted(exp_dir: Path, cells) -> tuple[dict[tuple, str], str | None]:
    """(label, category, seed) -> key the config (or the last plan) asks for, and what it was."""
    if cells is not None:
        return {(c.label, c.category, c.seed): c.key for c in cells}, "config"
    path = Path(exp_dir) / PLAN
    if not path.is_file():
        return {}, None
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
        return {(c["label"], c["category"], c.get("seed")): c["key"] for c in plan["cells"]}, "plan"
    except (json.JSONDecodeError, KeyError, TypeError):
        raise RunError(f"{path}: not an adrun plan; pass --config CONFIG to compare with the config instead") from None


def _span(record: dict) -> float | None:
    try:
        start = datetime.fromisoformat(record["started_at"])
        end = datetime.fromisoformat(record["finished_at"])
    except (KeyError, TypeError, ValueError):
        return None
    return (end - start).total_seconds()


def states(exp_dir: Path, cells=None) -> tuple[list[CellState], str | None]:
    """Every cell's state, in table order; and what the keys were compared with (config, plan or None).

    ``cells``: the config's cells (``config.expand``), to find stale and not-run ones.
    """
    exp_dir = Path(exp_dir)
    if not (exp_dir / "runs").is_dir() and cells is None:
        raise RunError(f"{exp_dir}: no runs/ folder; pass an experiment folder such as results/demo")
    wanted, against = _wanted(exp_dir, cells)
    out, seen = [], set()
    for record in read_records(exp_dir):
        where = (record.get("label"), record.get("category"), record.get("seed"))
        seen.add(where)
        state = STATES.get(str(record.get("status")), str(record.get("status")))
        if against is not None:
            if where not in wanted:
                state = "not in config" if against == "config" else "not in plan"
            elif wanted[where] != record.get("key"):
                state = "stale"
        out.append(
            CellState(
                str(where[0]),
                str(where[1]),
                where[2],
                state,
                record.get("key"),
                record.get("started_at"),
                record.get("finished_at"),
                _span(record),
                record.get("error"),
            )
        )
    if cells is not None:
        for cell in cells:
            if (cell.label, cell.category, cell.seed) not in seen:
                out.append(CellState(cell.label, cell.category, cell.seed, "not run", cell.key))
    return out, against
