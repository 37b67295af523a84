"""Fit+test time of stock Patchcore against AdrunPatchcore(coreset="fast"), same data and seed.

    python scripts/bench_patchcore.py                 # 40 train images of 256 px: N = 40,960
    python scripts/bench_patchcore.py --n-train 20    # N = 20,480

Both models run through anomalib's Engine on one synthetic MVTec-layout category, from
``seed_everything(seed)``; the script prints fit and test seconds, the ratios and both
pixel AUROCs. The backbone is randomly initialised (no download), so the AUROC says
the two runs agree, not how good Patchcore is. Feature extraction costs both models
the same, so the whole-run ratio is below the coreset ratio; it grows with N because
the coreset is O(N * picks) and extraction O(N).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # stock's per-pick progress bar


def make_category(root: Path, category: str, size: int, n_train: int, n_good: int, n_defect: int, seed: int) -> str:
    """Write one MVTec-layout category under ``root``; returns what wrote it."""
    try:
        from adrun.synthetic import make_dataset
    except ImportError:
        write_skimage_category(root / category, size, n_train, n_good, n_defect, seed)
        return "skimage texture crops (adrun.synthetic not found)"
    make_dataset(
        root, categories=(category,), seed=seed, image_size=size,
        n_train=n_train, n_test_good=n_good, n_test_defect=n_defect,
    )  # fmt: skip
    return "adrun.synthetic.make_dataset"


def write_skimage_category(folder: Path, size: int, n_train: int, n_good: int, n_defect: int, seed: int) -> None:
    """Fallback data: brick crops; a defect is a pasted gravel square with its exact mask."""
    import numpy as np
    from PIL import Image
    from skimage import data
    from skimage.transform import resize

    rng = np.random.default_rng(seed)
    brick, gravel = data.brick(), data.gravel()

    def crop(photo: np.ndarray) -> np.ndarray:
        side = int(rng.integers(size // 2, min(photo.shape) + 1))
        y, x = (int(rng.integers(0, d - side + 1)) for d in photo.shape)
        out = resize(photo[y : y + side, x : x + side], (size, size), preserve_range=True)
        return out.astype(np.uint8)

    def save(path: Path, image: np.ndarray, rgb: bool = True) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.stack([image] * 3, -1) if rgb else image).save(path)

    for split, count in (("train/good", n_train), ("test/good", n_good)):
        for i in range(count):
            save(folder / split / f"{i:03d}.png", crop(brick))
    for i in range(n_defect):
        image, mask = crop(brick), np.zeros((size, size), np.uint8)
        side = size // 5
        y, x = (int(v) for v in rng.integers(0, size - side, 2))
        image[y : y + side, x : x + side] = crop(gravel)[:side, :side]
        mask[y : y + side, x : x + side] = 255
        save(folder / "test/stain" / f"{i:03d}.png", image)
        save(folder / "ground_truth/stain" / f"{i:03d}_mask.png", mask, rgb=False)


def run(method: str, root: Path, category: str, args: argparse.Namespace, work: Path) -> dict:
    from anomalib.data import MVTecAD
    from anomalib.engine import Engine
    from anomalib.models import Patchcore
    from lightning.pytorch import seed_everything

    from adrun.models.patchcore.lightning import AdrunPatchcore

    seed_everything(args.seed, verbose=False)
    common = dict(
        backbone=args.backbone,
        layers=("layer2", "layer3"),
        pre_trained=False,
        coreset_sampling_ratio=args.ratio,
        pre_processor=Patchcore.configure_pre_processor(image_size=(args.image_size, args.image_size)),
        visualizer=False,
    )
    model = Patchcore(**common) if method == "anomalib" else AdrunPatchcore(coreset="fast", **common)
    datamodule = MVTecAD(root=root, category=category, num_workers=0)
    engine = Engine(
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=work / method,
        accelerator="cpu",
    )
    began = time.perf_counter()
    engine.fit(model=model, datamodule=datamodule)
    fitted = time.perf_counter()
    metrics = engine.test(model=model, datamodule=datamodule, verbose=False)[0]
    tested = time.perf_counter()
    return {
        "fit_s": fitted - began,
        "test_s": tested - fitted,
        "pixel_AUROC": metrics["pixel_AUROC"],
        "image_AUROC": metrics["image_AUROC"],
        "bank": model.model.memory_bank.clone(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-train", type=int, default=40, help="train images; N = n_train * (size/8)^2")
    parser.add_argument("--n-test-good", type=int, default=4)
    parser.add_argument("--n-test-defect", type=int, default=2, help="per defect type")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--backbone", default="wide_resnet50_2")
    parser.add_argument("--ratio", type=float, default=0.1, help="coreset_sampling_ratio (anomalib's default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    with tempfile.TemporaryDirectory(prefix="bench_patchcore_") as tmp:
        work = Path(tmp)
        source = make_category(
            work / "data", "tile", args.image_size, args.n_train, args.n_test_good, args.n_test_defect, args.seed
        )
        stock = run("anomalib", work / "data", "tile", args, work)
        fast = run("adrun", work / "data", "tile", args, work)

    n = args.n_train * (args.image_size // 8) ** 2
    print(f"data: {source}; {args.n_train} train images of {args.image_size} px -> N = {n} patches")
    print(f"model: Patchcore({args.backbone}, layer2+layer3, pre_trained=False), ratio {args.ratio}, seed {args.seed}")
    print(f"threads {torch.get_num_threads()}, cpu")
    for name, r in (("anomalib", stock), ("adrun fast", fast)):
        print(
            f"{name:>10}: fit {r['fit_s']:7.2f} s  test {r['test_s']:6.2f} s  total {r['fit_s'] + r['test_s']:7.2f} s"
            f"  pixel_AUROC {r['pixel_AUROC']:.6f}  image_AUROC {r['image_AUROC']:.6f}"
        )
    print(
        f"speed-up: fit {stock['fit_s'] / fast['fit_s']:.2f}x, "
        f"fit+test {(stock['fit_s'] + stock['test_s']) / (fast['fit_s'] + fast['test_s']):.2f}x"
    )
    print(f"memory banks identical: {torch.equal(stock['bank'], fast['bank'])} ({stock['bank'].shape[0]} rows)")


if __name__ == "__main__":
    main()
