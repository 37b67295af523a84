"""The 6-cell sweep the benchmarks time: Patchcore x 2 coreset ratios x 3 synthetic categories.

Tiny on purpose (resnet18, 64 px) so that what is measured is the runner, not the model.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

CELLS = 6
CONFIG = {
    "seed": 0,
    "data": {
        "format": "synthetic",
        "categories": ["tile", "leather", "grid"],
        "num_workers": 0,
        "train_batch_size": 8,
        "eval_batch_size": 8,
        "synthetic": {"image_size": 64, "n_train": 6, "n_test_good": 3, "n_test_defect": 1},
    },
    "models": [
        {
            "name": "patchcore",
            "backbone": "resnet18",
            "pre_trained": False,
            "image_size": 64,
            "coreset_sampling_ratio": {"grid": [0.05, 0.1]},
        }
    ],
    "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": 1},
}


def write_config(path: Path, name: str, output: Path) -> Path:
    path.write_text(yaml.safe_dump({"name": name, **CONFIG, "output": str(output)}, sort_keys=False))
    return path


def timed_sweep(config: Path, *args: str, src: Path | None = None) -> tuple[float, subprocess.CompletedProcess]:
    """Wall time of `adrun sweep CONFIG ARGS` in a fresh process (imports included).

    ``src``: run the adrun found there (a checkout's ``src``, first on PYTHONPATH) instead of this one.
    """
    env = None
    if src is not None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(src), os.environ.get("PYTHONPATH")) if p)}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "adrun.cli", "sweep", str(config), *args], capture_output=True, text=True, env=env
    )
    return time.perf_counter() - start, done
