"""Does --jobs 2 beat --jobs 1? The 6-cell sweep at both, with this checkout and, optionally, another.

The sweep is scripts/six_cells.py's (Patchcore x 2 coreset ratios x 3 synthetic categories,
tiny cells), so what is measured is the runner: a fresh process per cell pays anomalib's
imports (seconds) every time, a kept worker pays them once. Each run writes into a fresh
folder, so every cell is computed. ``--before SRC`` times the adrun in SRC (e.g. another
checkout's ``src``) in the same run, interleaved, so both see the same machine load.
Besides wall time it prints the CPU seconds of the sweep and all its processes: on a
busy machine wall time swings with the load, while the imports a runner repeats show
up in CPU time whatever the load.

    python scripts/bench_jobs.py [--repeats 1] [--before /path/to/other/src] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
from pathlib import Path

from six_cells import CELLS, timed_sweep, write_config  # scripts/six_cells.py

HERE = Path(__file__).resolve().parents[1] / "src"


def _cpu() -> float:
    """CPU seconds of every finished child process and, recursively, the ones they waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def sweep(work: Path, name: str, jobs: int, src: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one sweep into a fresh folder."""
    config = write_config(work / f"{name}.yaml", "bench-jobs", work / name)
    cpu = _cpu()
    seconds, done = timed_sweep(config, "--jobs", str(jobs), src=src)
    if done.returncode != 0 or done.stdout.count(" ok ") != CELLS:
        sys.exit(f"{name}: sweep failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return seconds, _cpu() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of each (median reported)")
    parser.add_argument("--before", type=Path, help="also time the adrun in this src folder (e.g. main's)")
    parser.add_argument("--keep", type=Path, help="work folder to keep (default: a temp folder)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="adrun-bench-jobs-"))
    work.mkdir(parents=True, exist_ok=True)
    sources = {"this checkout": HERE, **({f"before ({args.before})": args.before.resolve()} if args.before else {})}
    wall: dict[tuple[str, int], list[float]] = {(name, jobs): [] for name in sources for jobs in (1, 2)}
    cpu: dict[tuple[str, int], list[float]] = {key: [] for key in wall}
    for i in range(args.repeats):
        for n, (name, src) in enumerate(sources.items()):  # interleaved: both see the same load
            for jobs in (1, 2):
                seconds, cpu_seconds = sweep(work, f"{n}-jobs{jobs}-{i}", jobs, src)
                wall[name, jobs].append(seconds)
                cpu[name, jobs].append(cpu_seconds)
    w = {key: statistics.median(v) for key, v in wall.items()}
    c = {key: statistics.median(v) for key, v in cpu.items()}
    print(
        f"{CELLS}-cell sweep, median of {args.repeats}; {os.cpu_count()} cores; "
        f"load average at the end {os.getloadavg()[0]:.1f}"
    )
    print(f"  {'':34s} {'wall --jobs 1':>13s} {'--jobs 2':>9s} {'2 / 1':>6s}   {'CPU --jobs 1':>12s} {'--jobs 2':>9s}")
    for name in sources:
        print(
            f"  {name:34s} {w[name, 1]:12.2f}s {w[name, 2]:8.2f}s {w[name, 2] / w[name, 1]:6.2f}   "
            f"{c[name, 1]:11.2f}s {c[name, 2]:8.2f}s"
        )
    if args.before:
        before = next(name for name in sources if name.startswith("before"))
        for jobs in (1, 2):
            print(
                f"--jobs {jobs}, this checkout / before: wall {w['this checkout', jobs] / w[before, jobs]:.2f}, "
                f"CPU {c['this checkout', jobs] / c[before, jobs]:.2f}"
            )
    print("goal: --jobs 2 under --jobs 1 in wall time (2 / 1 below 1.00)")


if __name__ == "__main__":
    main()
