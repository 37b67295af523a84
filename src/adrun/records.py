"""Read and write run records atomically.

A record is the contract other tools read: ``<exp>/runs/<label>/<category>/record.json``.
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
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


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


def run_dir(exp_dir: Path, label: str, category: str) -> Path:
    return Path(exp_dir) / "runs" / label / category


def write_record(folder: Path, record: dict[str, Any]) -> None:
    atomic_write_text(Path(folder) / RECORD, json.dumps(record, indent=2, sort_keys=False) + "\n")


def read_record(folder: Path) -> dict[str, Any]:
    path = Path(folder) / RECORD
    if not path.is_file():
        raise RunError(f"{folder}: no {RECORD} here; pass a run folder <exp>/runs/<label>/<category>")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RunError(f"{path}: not valid JSON ({exc.msg}); rerun the cell to rewrite it") from None


def read_records(exp_dir: Path) -> list[dict[str, Any]]:
    """Every record under ``<exp_dir>/runs``, in cell order (model index, then category)."""
    runs = Path(exp_dir) / "runs"
    records = []
    for path in sorted(runs.glob(f"*/*/{RECORD}")):
        try:
            records.append(json.loads(path.read_text(encoding="utf-8")))
        except json.JSONDecodeError:
            continue  # cannot happen with atomic writes; never let one file sink a table
    return sorted(records, key=lambda r: (r.get("index", 0), r.get("category_index", 0), r.get("category", "")))
