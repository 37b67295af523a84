"""The demo's EfficientAd cell, the settings before issue 14 against today's demo.yaml, in one run.

    python scripts/bench_demo.py [--category tile]

Before: 10 training steps, 6 good and 3 defect test images per defect type. Today's
demo.yaml says what it runs now. For each: CPU seconds of this process (all threads,
user + system: steadier than wall time on a shared machine), wall seconds of fit and
test from the record, and the pixel and image AUROC, so the cheaper setting can be seen
to stay meaningful. Prints the ratio of CPU seconds.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BEFORE = ["data.synthetic.n_test_good=6", "data.synthetic.n_test_defect=3", "models.1.trainer.max_steps=10"]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(name: str, overrides: list[str], category: str, out: Path) -> dict:
    from adrun import sweep
    from adrun.config import load_experiment

    experiment = load_experiment(REPO / "configs" / "demo.yaml", [*overrides, f"output={out / name}"])
    the_plan = sweep.plan(experiment, only=[f"efficient_ad/{category}"])
    cpu, wall = cpu_seconds(), time.perf_counter()
    outcome = sweep.execute(the_plan, force=True)
    cpu, wall = cpu_seconds() - cpu, time.perf_counter() - wall
    (record,) = outcome.records
    cell = the_plan.cells[0]
    return {
        "name": name,
        "cpu": cpu,
        "wall": wall,
        "steps": cell.trainer.max_steps,
        "test images": len(list((the_plan.root / category / "test").glob("*/*.png"))),
        **record["seconds"],
        **record["metrics"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--category", default="tile")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    import os

    os.environ.setdefault("TQDM_DISABLE", "1")
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as tmp:
        rows = [run("before", BEFORE, args.category, Path(tmp)), run("now", [], args.category, Path(tmp))]
    for r in rows:
        print(
            f"{r['name']:>6}: {r['steps']} steps, {r['test images']} test images: CPU {r['cpu']:.0f} s, "
            f"wall {r['wall']:.0f} s (fit {r['fit']:.0f} s, test {r['test']:.0f} s, samples {r['samples']:.0f} s); "
            f"pixel AUROC {r['pixel_AUROC']:.3f}, image AUROC {r['image_AUROC']:.3f}"
        )
    print(f"CPU seconds now / before: {rows[1]['cpu'] / rows[0]['cpu']:.2f}")


if __name__ == "__main__":
    main()
