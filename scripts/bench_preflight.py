"""Time the dataset preflight on one MVTec-sized category: headers only, and --verify-images.

The synthetic generator writes a category the size of MVTec AD's larger ones (242 train/good
images; 110 test images: 30 good and 20 of each of 4 defects, with their 80 masks), then
``adrun.data.prepare`` checks it as ``adrun sweep`` does before the first cell: layout,
masks, and each image's header, or with ``verify_images`` a full decode of each image.

    python scripts/bench_preflight.py [--image-size 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from adrun import data, synthetic
from adrun.config import validate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=256, help="image side (MVTec AD's are 700 to 1024)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each (median reported)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="adrun-bench-preflight-") as tmp:
        root = Path(tmp) / "data"
        synthetic.make_dataset(
            root, ["tile"], image_size=args.image_size, n_train=242, n_test_good=30, n_test_defect=20
        )
        n = sum(1 for p in (root / "tile").rglob("*.png"))
        experiment = validate(
            {
                "name": "bench",
                "output": str(Path(tmp) / "out"),
                "data": {"format": "mvtec", "root": str(root), "categories": ["tile"]},
                "models": [{"name": "patchcore"}],
            }
        )
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.repeats):
            for verify in (False, True):
                start = time.perf_counter()
                data.prepare(experiment, Path(tmp) / "out", verify_images=verify)
                times[verify].append(time.perf_counter() - start)
    headers, full = statistics.median(times[False]), statistics.median(times[True])
    print(f"one category, {n} PNGs at {args.image_size} px (median of {args.repeats}):")
    print(f"  headers only (default):  {headers:.3f} s")
    print(f"  --verify-images:         {full:.3f} s")
    print(f"full decode / headers: {full / headers:.1f}")


if __name__ == "__main__":
    main()
