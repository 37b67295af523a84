"""How long does rerunning a finished sweep take? It must do no model work.

Runs a 6-cell sweep (Patchcore x 2 coreset ratios x 3 synthetic categories) once,
then reruns the same command several times and prints the rerun wall time, how
many cells were recomputed, and the ratio to the first (computing) run - which is
what anomalib's own benchmark pipeline costs on every rerun, since it cannot resume.

    python scripts/bench_resume.py [--reruns 5] [--keep DIR]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

CONFIG = {
    "name": "bench-resume",
    "seed": 0,
    "data": {"format": "synthetic", "categories": ["tile", "leather", "grid"], "num_workers": 0,
             "train_batch_size": 8, "eval_batch_size": 8,
             "synthetic": {"image_size": 64, "n_train": 6, "n_test_good": 3, "n_test_defect": 1}},
    "models": [{"name": "patchcore", "backbone": "resnet18", "pre_trained": False, "image_size": 64,
                "coreset_sampling_ratio": {"grid": [0.05, 0.1]}}],
    "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": 1},
}


def sweep(config: Path) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "adrun.cli", "sweep", str(config)],
                          capture_output=True, text=True, check=True)
    return time.perf_counter() - start, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reruns", type=int, default=5, help="timed reruns of the finished sweep")
    parser.add_argument("--keep", type=Path, help="work folder to keep (default: a temp folder)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="adrun-bench-resume-"))
    config = work / "bench.yaml"
    CONFIG["output"] = str(work / "results")
    config.write_text(yaml.safe_dump(CONFIG, sort_keys=False))

    first, out = sweep(config)
    cells = out.count(" ok ")
    records = sorted((work / "results" / "bench-resume" / "runs").glob("*/*/record.json"))
    stamps = {p: p.stat().st_mtime_ns for p in records}
    times = []
    for _ in range(args.reruns):
        seconds, out = sweep(config)
        times.append(seconds)
    recomputed = sum(p.stat().st_mtime_ns != t for p, t in stamps.items())
    rerun = statistics.median(times)
    print(f"cells: {len(records)} (computed in the first run: {cells})")
    print(f"first run (computes every cell, as a non-resuming runner always does): {first:.2f} s")
    print(f"rerun of the finished sweep, median of {args.reruns}: {rerun:.2f} s "
          f"(min {min(times):.2f}, max {max(times):.2f}); cells recomputed: {recomputed}; skipped: {out.count('skip')}")
    print(f"rerun / first run: {rerun / first:.3f}  ({first / rerun:.1f}x faster); goal: rerun < 2 s")


if __name__ == "__main__":
    main()
