"""Read and write run records atomically.

A record is the contract other tools read: ``<exp>/runs/<label>/<category>/seed-<N>/record.json``
(each part a safe folder name, ``config.cell_folder``). Nothing is written outside the
experiment folder: every run folder is checked first (``run_dir``). The sweep's plan,
the cells its config asked for, is ``<exp>/plan.json``; the tables show those cells only.
Every file adrun writes goes to a temporary file in the same folder and is renamed
into place, so a crash leaves either the old file or the new one, both whole.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adrun.errors import RunError

RECORD = "record.json"
PLAN = "plan.json"
_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: os.umask can only be read by setting it


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temp file beside ``path``, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give what open() would
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    def write(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")

    atomic_write(path, write)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    """Versions that decide a result. Reads package metadata only: no heavy imports."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for package in ("adrun", "anomalib", "torch", "torchvision", "lightning", "timm"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "missing"
    return out


def inside(exp_dir: Path, relative: str | Path) -> Path:
    """``exp_dir / relative``, refused unless it resolves (symlinks too) inside ``exp_dir``."""
    base = Path(exp_dir).resolve()
    target = (Path(exp_dir) / relative).resolve()
    if target == base or base not in target.parents:
        raise RunError(
            f"{relative}: resolves to {target}, outside the experiment folder {exp_dir}; "
            "adrun writes only inside it (check the labels, categories and symlinks under runs/)"
        )
    return Path(exp_dir) / relative


def run_dir(exp_dir: Path, folder: str) -> Path:
    """A cell's folder (``cell.folder``, ``record["folder"]``), checked to lie inside ``<exp>/runs``."""
    parts = Path(folder).parts
    if len(parts) < 2 or parts[0] != "runs":
        raise RunError(f"{folder}: not a run folder; run folders lie under runs/ of the experiment folder")
    inside(Path(exp_dir) / "runs", Path(*parts[1:]))
    return Path(exp_dir) / folder


def write_record(folder: Path, record: dict[str, Any]) -> None:
    atomic_write_text(Path(folder) / RECORD, json.dumps(record, indent=2, sort_keys=False) + "\n")


def read_record(folder: Path) -> dict[str, Any]:
    path = Path(folder) / RECORD
    if not path.is_file():
        raise RunError(f"{folder}: no {RECORD} here; pass a run folder <exp>/runs/<label>/<category>/seed-<N>")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RunError(f"{path}: not valid JSON ({exc.msg}); rerun the cell to rewrite it") from None


def read_records(exp_dir: Path) -> list[dict[str, Any]]:
    """Every record under ``<exp_dir>/runs``, at any depth, in cell order (model, category, seed).

    Each gets ``folder``: where it was found, relative to ``exp_dir`` (a copied folder
    keeps working). Depth is not assumed, so no record is ever missed by its layout.
    """
    exp_dir = Path(exp_dir)
    records = []
    for path in sorted((exp_dir / "runs").rglob(RECORD)):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue  # cannot happen with atomic writes; never let one file sink a table
        if isinstance(record, dict):
            record["folder"] = path.parent.relative_to(exp_dir).as_posix()
            records.append(record)
    return sorted(records, key=_order)


def read_record_at(exp_dir: Path, folder: str) -> dict[str, Any] | None:
    """The record in one run folder (``folder`` set as in ``read_records``), or None."""
    try:
        record = json.loads((run_dir(exp_dir, folder) / RECORD).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict):
        return None
    record["folder"] = folder
    return record


def _order(record: dict) -> tuple:
    return (
        record.get("index", 0),
        record.get("category_index", 0),
        record.get("category", ""),
        record.get("seed") if isinstance(record.get("seed"), int) else 0,
        record.get("folder", ""),
    )


# --------------------------------------------------------------------------- the plan


def write_plan(exp_dir: Path, cells: list, smoke: bool = False) -> None:
    """``plan.json``: the cells of the config being run (key, label, category, seed, folder)."""
    from adrun import __version__

    plan = {
        "experiment": cells[0].experiment if cells else Path(exp_dir).name,
        "written_at": now(),
        "adrun": __version__,
        "smoke": smoke,
        "cells": [
            {
                "key": c.key,
                "label": c.label,
                "category": c.category,
                "seed": c.seed,
                "folder": c.folder,
                "index": c.index,
                "category_index": c.category_index,
            }
            for c in cells
        ],
    }
    atomic_write_text(Path(exp_dir) / PLAN, json.dumps(plan, indent=2) + "\n")


def read_plan(exp_dir: Path) -> dict[str, Any] | None:
    """The most recent sweep's plan, or None (an experiment from before plans, or no sweep yet)."""
    path = Path(exp_dir) / PLAN
    if not path.is_file():
        return None
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RunError(f"{path}: not valid JSON ({exc.msg}); rerun the sweep to rewrite it") from None
    if not isinstance(plan, dict) or not isinstance(plan.get("cells"), list):
        raise RunError(f"{path}: not an adrun plan (no cells list); rerun the sweep to rewrite it")
    return plan
