"""What pixel AUPRO adds to a cell's test step on CPU, measured as a ratio in one run.

One synthetic category of realistic size (MVTec's tile has 117 test images at 256 px),
one Patchcore fit, then the test step from that checkpoint again and again, alternating
the default metric list with and without ``pixel_AUPRO`` (after one untimed round). The
medians and their ratio are printed; both variants load the same checkpoint, so only the
metrics differ.

    python scripts/bench_metrics.py
    python scripts/bench_metrics.py --test-images 110 --image-size 256 --repeats 3 --backbone resnet18
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test-images", type=int, default=110, help="good + 4 defect types (~1/4 good)")
    parser.add_argument("--train-images", type=int, default=40)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--backbone", default="wide_resnet50_2", help="untrained: nothing is downloaded")
    parser.add_argument("--repeats", type=int, default=3, help="timed test steps per variant, alternating")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # anomalib's import-time deprecations
        from adrun import registry, sweep
        from adrun.config import DEFAULT_METRICS, validate
        from adrun.run import cell_log, run_cell

    n_defect = max(1, (args.test_images * 3 // 4) // 4)
    n_good = max(1, args.test_images - 4 * n_defect)
    with tempfile.TemporaryDirectory(prefix="adrun-bench-metrics-") as tmp:
        raw = {
            "name": "bench",
            "output": str(Path(tmp) / "results"),
            "seed": 0,
            "data": {
                "format": "synthetic",
                "categories": ["tile"],
                "num_workers": 0,
                "eval_batch_size": 16,
                "synthetic": {
                    "image_size": args.image_size,
                    "n_train": args.train_images,
                    "n_test_good": n_good,
                    "n_test_defect": n_defect,
                },
            },
            "models": [
                {"name": "patchcore", "backbone": args.backbone, "pre_trained": False, "image_size": args.image_size}
            ],
            "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": 1},
        }
        the_plan = sweep.plan(validate(raw))
        (cell,) = the_plan.cells
        record = run_cell(cell, the_plan.root, the_plan.exp_dir)
        assert record["status"] == "success", record["error"]
        run = Path(the_plan.exp_dir) / cell.folder
        without = [m for m in cell.metrics if m.name != "pixel_AUPRO"]
        variants = {"with AUPRO": cell, "without AUPRO": cell.model_copy(update={"metrics": without})}
        seconds: dict[str, list[float]] = {name: [] for name in variants}
        values: dict[str, dict] = {}
        for repeat in range(args.repeats + 1):  # the first round warms up and is not counted
            for name, variant in variants.items():
                with cell_log(Path(tmp) / "bench-log"):
                    datamodule = registry.build_datamodule(variant, the_plan.root)
                    model = registry.build_model(variant, the_plan.exp_dir)
                    engine = registry.build_engine(variant, Path(tmp) / "engine")
                    start = time.perf_counter()
                    results = engine.test(
                        model=model, datamodule=datamodule, ckpt_path=run / record["checkpoint"], verbose=False
                    )
                    if repeat:
                        seconds[name].append(time.perf_counter() - start)
                values[name] = {k: round(float(v), 4) for k, v in results[0].items()}
        n_test = len(datamodule.test_data)

    with_s, without_s = (statistics.median(seconds[n]) for n in ("with AUPRO", "without AUPRO"))
    print(
        f"patchcore {args.backbone} (untrained), {args.train_images} train / {n_test} test images "
        f"at {args.image_size} px, {args.threads} threads, {args.repeats} alternating repeats"
    )
    print(f"metrics: {', '.join(DEFAULT_METRICS)} (AUPRO fpr_limit 0.3)")
    for name in variants:
        print(
            f"  test step {name:<14} median {statistics.median(seconds[name]):7.2f} s  "
            f"(runs: {', '.join(f'{s:.2f}' for s in seconds[name])})  {values[name]}"
        )
    print(
        f"AUPRO adds {with_s - without_s:.2f} s per test step "
        f"({1000 * (with_s - without_s) / n_test:.1f} ms per image): ratio with/without {with_s / without_s:.3f}"
    )


if __name__ == "__main__":
    main()
