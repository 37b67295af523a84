"""Time anomalib's k-center-greedy against adrun's exact fast one on the same tensors.

Both samplers get the same embedding and the same global RNG state, so they draw the
same projection and start index; the script checks that the picked indices match.

    python scripts/bench_coreset.py --n 40960 --features patchcore
    python scripts/bench_coreset.py --n 235520 --features patchcore --max-picks 200

``--features random`` is the worst case for pruning (no structure to exploit);
``--features patchcore`` is what Patchcore really feeds the sampler: layer2+layer3
embeddings of a randomly initialised wide_resnet50_2 over texture crops from
skimage's bundled photos (no download).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

# Stock's per-pick progress bar is not the benchmark's business. tqdm reads this when
# imported, and torch imports it, so it must come first.
os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

TEXTURES = ("brick", "grass", "gravel")
PATCHES_PER_CROP = 32 * 32  # layer2 of a 256 px crop is 32x32


def texture_crops(count: int, size: int = 256, seed: int = 0) -> torch.Tensor:
    """``count`` distinct augmented crops (random box, flip, rot90, contrast) of skimage textures."""
    from skimage import data
    from skimage.transform import resize

    rng = np.random.default_rng(seed)
    photos = [getattr(data, name)().astype(np.float32) / 255.0 for name in TEXTURES]
    crops = []
    for i in range(count):
        photo = photos[i % len(photos)]
        side = int(rng.integers(160, min(photo.shape) + 1))
        y, x = (int(rng.integers(0, d - side + 1)) for d in photo.shape)
        crop = resize(photo[y : y + side, x : x + side], (size, size), anti_aliasing=True)
        crop = np.rot90(crop, int(rng.integers(4)))
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        crop = np.clip((crop - crop.mean()) * rng.uniform(0.7, 1.3) + crop.mean() + rng.uniform(-0.1, 0.1), 0, 1)
        crops.append(np.ascontiguousarray(crop))
    gray = torch.from_numpy(np.stack(crops))[:, None]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (gray.expand(-1, 3, -1, -1) - mean) / std


def patchcore_features(n: int, seed: int = 0, batch: int = 8) -> torch.Tensor:
    """``n`` Patchcore embeddings (1536 dims), exactly as ``PatchcoreModel`` stores them in training."""
    from anomalib.models.image.patchcore.torch_model import PatchcoreModel

    count = -(-n // PATCHES_PER_CROP)
    images = texture_crops(count, seed=seed)
    torch.manual_seed(seed)
    model = PatchcoreModel(layers=["layer2", "layer3"], backbone="wide_resnet50_2", pre_trained=False).train()
    with torch.no_grad():
        for start in range(0, count, batch):
            model(images[start : start + batch])
    return torch.vstack(model.embedding_store)[:n].contiguous()


def random_features(n: int, dim: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def build_embedding(args: argparse.Namespace) -> torch.Tensor:
    if args.cache and Path(args.cache).is_file():
        embedding = torch.load(args.cache)
        if embedding.shape[0] < args.n:
            raise SystemExit(f"{args.cache} holds {embedding.shape[0]} rows, fewer than --n {args.n}")
        return embedding[: args.n].contiguous()
    if args.features == "patchcore":
        embedding = patchcore_features(args.n, seed=args.seed)
    else:
        embedding = random_features(args.n, args.dim, seed=args.seed)
    if args.cache:
        torch.save(embedding, args.cache)
    return embedding


def seed_everything(seed: int) -> None:
    # Stock's projection draws from numpy's global RNG as well as torch's.
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_sampler(method: str, embedding: torch.Tensor, args: argparse.Namespace) -> dict:
    """One sampler from a fresh seed; times the projection apart from the picks."""
    from anomalib.models.components.sampling import KCenterGreedy

    from adrun.models.patchcore.coreset import FastKCenterGreedy

    seed_everything(args.seed)
    sampler = (FastKCenterGreedy if method == "adrun" else KCenterGreedy)(embedding, args.ratio)
    if args.max_picks:
        sampler.coreset_size = min(sampler.coreset_size, args.max_picks)
    projected_at = []
    transform = sampler.model.transform

    def timed_transform(x: torch.Tensor) -> torch.Tensor:
        out = transform(x)
        projected_at.append(time.perf_counter())
        return out

    sampler.model.transform = timed_transform
    began = time.perf_counter()
    idxs = sampler.select_coreset_idxs()
    ended = time.perf_counter()
    return {
        "idxs": idxs,
        "projection_s": projected_at[0] - began,
        "picks_s": ended - projected_at[0],
        "projected": sampler.model.sparse_random_matrix.shape[0],
        "sampler": sampler,
    }


def matvec_floor_ms(features: torch.Tensor, repeats: int = 7) -> float:
    """Median time of ``features @ v``: one read of the projected features."""
    v = torch.randn(features.shape[1])
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        features @ v
        times.append(time.perf_counter() - began)
    return 1e3 * statistics.median(times)


def read_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> int:
    """Reset the kernel's peak-RSS mark (Linux) so loading the embedding does not mask
    the sampler's own peak; returns the current RSS in KiB."""
    Path("/proc/self/clear_refs").write_text("5")
    return read_status_kib("VmRSS")


def peak_rss_mib(method: str, args: argparse.Namespace) -> float:
    """Extra peak RSS of one sampler, measured in a fresh process (torch's allocations
    are invisible to tracemalloc)."""
    import subprocess
    import sys

    cmd = [sys.executable, __file__, "--only", method, "--n", str(args.n), "--dim", str(args.dim)]
    cmd += ["--features", args.features, "--ratio", str(args.ratio), "--seed", str(args.seed)]
    cmd += ["--max-picks", str(args.max_picks or 0), "--cache", args.cache]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=40960, help="rows in the embedding")
    parser.add_argument("--dim", type=int, default=1536, help="embedding dims for --features random (patchcore: 1536)")
    parser.add_argument("--features", choices=("random", "patchcore"), default="patchcore")
    parser.add_argument("--ratio", type=float, default=0.02, help="coreset sampling ratio")
    parser.add_argument("--max-picks", type=int, default=0, help="time only the first picks (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default="", help="load the embedding from / save it to this .pt file")
    parser.add_argument("--memory", action="store_true", help="also measure peak RSS per sampler")
    parser.add_argument("--only", choices=("anomalib", "adrun"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    embedding = build_embedding(args)
    if args.only:  # child of --memory: print the sampler's extra peak RSS in MiB
        import adrun.models.patchcore.coreset  # noqa: F401  (imports are not the sampler's memory)

        before = reset_peak_rss()
        run_sampler(args.only, embedding, args)
        print((read_status_kib("VmHWM") - before) / 1024)
        return

    stock = run_sampler("anomalib", embedding, args)
    fast = run_sampler("adrun", embedding, args)
    picks = len(stock["idxs"])
    floor = matvec_floor_ms(stock["sampler"].features)
    stock_ms = 1e3 * stock["picks_s"] / picks
    fast_ms = 1e3 * fast["picks_s"] / picks

    print(f"features: {args.features}, N={args.n} x {embedding.shape[1]} -> projected {stock['projected']} dims")
    print(
        f"picks timed: {picks} (coreset size {int(args.n * args.ratio)}), seed {args.seed}, "
        f"threads {torch.get_num_threads()}"
    )
    print(f"projection (same code in both): stock {stock['projection_s']:.2f} s, adrun {fast['projection_s']:.2f} s")
    print(f"anomalib picks: {stock['picks_s']:.2f} s  {stock_ms:.2f} ms/pick")
    print(f"adrun    picks: {fast['picks_s']:.2f} s  {fast_ms:.2f} ms/pick (incl. its setup)")
    print(
        f"speed-up: {stock['picks_s'] / fast['picks_s']:.1f}x picks, "
        f"{(stock['projection_s'] + stock['picks_s']) / (fast['projection_s'] + fast['picks_s']):.1f}x total"
    )
    print(f"fp32 matvec floor over the projected features: {floor:.2f} ms")
    print(f"indices identical: {stock['idxs'] == fast['idxs']}")
    if args.memory:
        if not args.cache:
            raise SystemExit("--memory needs --cache so the child processes load the same embedding")
        stock_mib, fast_mib = peak_rss_mib("anomalib", args), peak_rss_mib("adrun", args)
        print(
            f"extra peak RSS while sampling: anomalib {stock_mib:.0f} MiB, adrun {fast_mib:.0f} MiB "
            f"(projected features alone: {args.n * stock['projected'] * 4 / 2**20:.0f} MiB)"
        )


if __name__ == "__main__":
    main()
