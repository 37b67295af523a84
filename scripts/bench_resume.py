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
import tempfile
from pathlib import Path

from six_cells import timed_sweep, write_config  # scripts/six_cells.py


def sweep(config: Path) -> tuple[float, str]:
    seconds, done = timed_sweep(config)
    done.check_returncode()
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reruns", type=int, default=5, help="timed reruns of the finished sweep")
    parser.add_argument("--keep", type=Path, help="work folder to keep (default: a temp folder)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="adrun-bench-resume-"))
    config = write_config(work / "bench.yaml", "bench-resume", work / "results")

    first, out = sweep(config)
    cells = out.count(" ok ")
    records = sorted((work / "results" / "bench-resume" / "runs").rglob("record.json"))
    stamps = {p: p.stat().st_mtime_ns for p in records}
    times = []
    for _ in range(args.reruns):
        seconds, out = sweep(config)
        times.append(seconds)
    recomputed = sum(p.stat().st_mtime_ns != t for p, t in stamps.items())
    rerun = statistics.median(times)
    print(f"cells: {len(records)} (computed in the first run: {cells})")
    print(f"first run (computes every cell, as a non-resuming runner always does): {first:.2f} s")
    print(
        f"rerun of the finished sweep, median of {args.reruns}: {rerun:.2f} s "
        f"(min {min(times):.2f}, max {max(times):.2f}); cells recomputed: {recomputed}; skipped: {out.count('skip')}"
    )
    print(f"rerun / first run: {rerun / first:.3f}  ({first / rerun:.1f}x faster); goal: rerun < 2 s")


if __name__ == "__main__":
    main()
