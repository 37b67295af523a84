"""Helpers for the tests that drive whole sweeps in subprocesses (test_sweep, test_ray)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import run_path, tiny_raw, write_yaml

CATEGORIES = ["tile", "leather", "grid"]


def sweep_config(tmp: Path, name: str = "c.yaml", **data) -> Path:
    """The tiny config, Patchcore only, over three categories."""
    raw = tiny_raw(tmp / "results", **{"categories": CATEGORIES, **data})
    raw["models"] = raw["models"][:1]
    return write_yaml(tmp / name, raw)


def adrun(*args) -> subprocess.Popen:
    # Wide enough that rich does not wrap the lines asserted on.
    return subprocess.Popen(
        [sys.executable, "-m", "adrun.cli", *map(str, args)],
        env={**os.environ, "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def record(exp: Path, category: str, label: str = "patchcore", seed: int = 42) -> dict | None:
    path = run_path(exp, label, category, seed) / "record.json"
    return json.loads(path.read_text()) if path.exists() else None


def wait_for(predicate, timeout: float = 180.0):
    """Poll every 50 ms until ``predicate()`` is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := predicate():
            return found
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def tables(exp: Path) -> dict[str, str]:
    return {name: (exp / name).read_text() for name in ("pixel_auroc.csv", "image_auroc.csv", "metrics.csv")}


def reference_sweep(tmp: Path) -> Path:
    """An uninterrupted serial local sweep: the tables every other run must reproduce."""
    proc = adrun("sweep", sweep_config(tmp))
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    return tmp / "results" / "tiny"
