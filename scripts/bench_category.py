"""One MVTec-sized Patchcore category end to end through adrun's CLI, phase by phase.

    python scripts/bench_category.py                          # the default: 242 + 110 images, 256 px, fp32
    python scripts/bench_category.py --precision both         # fp32 and bf16, with bf16's metric deltas
    python scripts/bench_category.py --stock --stock-picks 300  # and anomalib's own Patchcore, with ratios
    python scripts/bench_category.py --n-train 40 --n-test 22 --image-size 128 --no-check   # quick

The data is adrun's synthetic generator (``adrun.synthetic``, what ``adrun make-data``
writes), one category (tile) of MVTec AD's average size: 242 training images and 110
test images (30 good, 20 of each of 4 defects) at 256 px. The model is Patchcore with
wide_resnet50_2, layer2+layer3, ``pre_trained: false`` (no download) and a 10% coreset:
N = 242 * 32 * 32 = 247,808 patches and 24,780 picks.

What runs, in one invocation:

- ``adrun sweep`` on that category, as a subprocess: the real CLI path. The phase table
  comes from the record (``seconds.phases``, timed inside AdrunPatchcore); the total is
  the wall time of the whole command, imports included; the peak RSS is the command's.
- ``--stock``: anomalib's own Patchcore on the same data, same seed, same Engine
  arguments, in a subprocess of its own, timed the same way (wrapped methods). Its
  coreset takes ~0.13 s per pick at this size (~55 min in all), so ``--stock-picks K``
  times its first K picks and extrapolates linearly (every stock pick costs the same:
  one pass over N x D); it then scores with a memory bank of the full size (adrun's,
  from its checkpoint), so its scoring phases are real. Its first K picks are compared
  with adrun's.
- The backbone alone on one batch: anomalib's NCHW under no_grad, adrun's channels_last
  under inference_mode, and bf16 autocast.
- The equality checks, on a smaller category (``--check-*``): anomalib's Patchcore and
  adrun's, each fitted and tested through anomalib's Engine from the same seed. Checked:
  the sampler's indices against stock's on the same embedding (exact); with an NCHW
  backbone, the embedding, coreset indices and memory bank bitwise stock's, and the raw
  anomaly maps at least as close to float64's as stock's own are; maps within 1e-5 of
  stock's relative to the map's range, image scores within relative 1e-5, every metric
  equal to 4 decimals. Stock's ``||x||^2 - 2 x.y + ||y||^2`` cancels where a patch lies
  near a bank row (relative errors up to ~1e-4 there), so a pixel-wise relative 1e-5
  against stock's own map is not a bar any other rounding can meet; float64 is the
  referee. With channels_last, whether the picks are stock's end to end is reported:
  the convolutions round differently (~1e-7) and the greedy argmax may take the other
  row of a near-tie.
- The CPU's GEMM rate (fp32 and bf16), to express the backbone's FLOP rate as a fraction of what this CPU reaches.

The machine's load (``/proc/loadavg``) is printed before and after: timings on shared
cores are inflated, ratios measured in one run much less so.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # stock's per-pick progress bar

REPO = Path(__file__).resolve().parents[1]
CATEGORY = "tile"
PHASES = ("projection", "coreset", "backbone", "scoring", "metrics")
LABELS = {
    "projection": "projection (random, stock's)",
    "coreset": "coreset picks",
    "backbone": "backbone forward",
    "scoring": "scoring (NN + maps)",
    "metrics": "metrics (thresholds, AUROC, F1)",
}
STOCK_SEARCH = "anomalib (nearest_neighbors, chunked)"
BF16_SEARCH = "adrun bf16 filter + fp32 re-check"
METRICS = ("image_AUROC", "image_F1Score", "pixel_AUROC", "pixel_F1Score")


# --------------------------------------------------------------------------- helpers


def max_rel(values, reference) -> float:
    """The largest |values - reference| / |reference| (a reference of 0 counts as 1e-12)."""
    return float(((values - reference).abs() / reference.abs().clamp_min(1e-12)).max())


def max_range_rel(values, reference) -> float:
    """The largest |values - reference| over the reference's range (max - min)."""
    return float((values - reference).abs().max() / (reference.max() - reference.min()))


def load() -> str:
    try:
        return "load average " + " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "load average unknown"


def split_test(n_test: int) -> tuple[int, int]:
    """(good, per defect) for n_test test images over the generator's 4 defect types, MVTec's ~27% good."""
    per_defect = max(1, round(n_test * 0.73 / 4))
    good = max(1, n_test - 4 * per_defect)
    return good, per_defect


def make_data(root: Path, size: int, n_train: int, n_test: int, seed: int) -> float:
    from adrun.synthetic import make_dataset

    good, per_defect = split_test(n_test)
    began = time.perf_counter()
    make_dataset(
        root,
        categories=(CATEGORY,),
        seed=seed,
        image_size=size,
        n_train=n_train,
        n_test_good=good,
        n_test_defect=per_defect,
    )
    return time.perf_counter() - began


def config(root: Path, output: Path, name: str, args: argparse.Namespace, precision: str) -> dict:
    return {
        "name": name,
        "seed": args.seed,
        "output": str(output),
        "data": {
            "format": "mvtec",
            "root": str(root),
            "categories": [CATEGORY],
            "train_batch_size": args.batch,
            "eval_batch_size": args.batch,
            "num_workers": 0,
        },
        "models": [
            {
                "name": "patchcore",
                "backbone": args.backbone,
                "layers": ["layer2", "layer3"],
                "pre_trained": False,
                "coreset_sampling_ratio": args.ratio,
                "image_size": args.image_size,
                "precision": precision,
            }
        ],
        "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": 1},
        # Stock Patchcore's own evaluator computes these four: the same set on both sides.
        "metrics": [{"name": m} for m in METRICS],
    }


def run_measured(cmd: list[str], env: dict | None = None) -> tuple[int, float, float, str]:
    """(exit code, wall seconds, peak RSS MiB, output) of one child process."""
    began = time.perf_counter()
    out = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - began
    out.seek(0)
    return proc.returncode, wall, usage.ru_maxrss / 1024, out.read()


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def adrun_sweep(root: Path, work: Path, args: argparse.Namespace, precision: str) -> dict:
    import yaml

    name = f"bench-{precision}"
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config(root, work / "results", name, args, precision), sort_keys=False))
    code, wall, rss, output = run_measured([sys.executable, "-m", "adrun.cli", "sweep", str(path)], env=child_env())
    if code != 0:
        raise SystemExit(f"adrun sweep failed (exit {code}):\n{output[-3000:]}")
    folder = work / "results" / name / "runs" / "patchcore" / CATEGORY / f"seed-{args.seed}"
    record = json.loads((folder / "record.json").read_text())
    seconds = record["seconds"]
    runtime = record.get("runtime", {})
    return {
        "wall": wall,
        "rss": rss,
        "phases": runtime.get("phases", {}),
        "cell": seconds["total"],
        "fit": seconds["fit"],
        "test": seconds["test"],
        "metrics": record["metrics"],
        "samples": seconds.get("samples"),
        "runtime": runtime,
        "checkpoint": folder / "model.ckpt",
    }


def print_table(columns: dict[str, dict], stock_note: str = "") -> None:
    names = list(columns)
    header = f"| {'phase':<34} |" + "".join(f" {n:>14} |" for n in names)
    if "stock" in columns and len(names) > 1:
        header += "".join(f" {'stock / ' + n:>16} |" for n in names if n != "stock")
    print(header)
    print(
        "|"
        + "-" * 36
        + "|"
        + "".join("-" * 15 + ":|" for _ in names)
        + ("".join("-" * 17 + ":|" for n in names if n != "stock") if "stock" in columns else "")
    )
    rows = [(LABELS[p], p) for p in PHASES] + [
        ("other (data, Lightning, hooks)", "other"),
        ("cell: fit + test", "cell"),
        ("sample grid (adrun, after test)", "samples"),
        ("rest of command (imports, tables)", "outside"),
        ("total: whole command", "wall"),
    ]
    for label, key in rows:
        line = f"| {label:<34} |"
        values = {}
        for n in names:
            column = columns[n]
            value = (
                column["wall"]
                if key == "wall"
                else column["cell"]
                if key == "cell"
                else column.get(key)
                if key in ("other", "samples", "outside")
                else column["phases"].get(key, 0.0)
            )
            values[n] = value
            line += f" {value:>14.1f} |" if value is not None else f" {'-':>14} |"
        if "stock" in columns:
            for n in names:
                if n == "stock":
                    continue
                ratio = values["stock"] / values[n] if values[n] and values["stock"] is not None else float("nan")
                line += f" {ratio:>15.1f}x |"
        print(line)
    line = f"| {'peak RSS (MiB)':<34} |" + "".join(f" {columns[n]['rss']:>14.0f} |" for n in names)
    print(line + ("".join(f" {'':>16} |" for n in names if n != "stock") if "stock" in columns else ""))
    if stock_note:
        print(stock_note)


def add_other(column: dict) -> None:
    column["other"] = column["cell"] - sum(column["phases"].get(p, 0.0) for p in PHASES)
    column["outside"] = column["wall"] - column["cell"] - (column.get("samples") or 0.0)


# --------------------------------------------------------------------------- stock child


def stock_child(args: argparse.Namespace) -> None:
    """anomalib's Patchcore, timed by wrapping its methods; writes a JSON summary to args.out."""
    import torch
    from anomalib.callbacks.checkpoint import ModelCheckpoint
    from anomalib.data import MVTecAD
    from anomalib.engine import Engine
    from anomalib.models import Patchcore
    from anomalib.models.components.sampling import KCenterGreedy
    from anomalib.models.image.patchcore import torch_model
    from lightning.pytorch import seed_everything

    from adrun.models.patchcore.coreset import time_projection

    phases = {p: 0.0 for p in PHASES}
    depth = [0]

    def timed(name, method):
        def run(*a, **k):
            outer = depth[0] == 0
            depth[0] += 1
            began = time.perf_counter()
            try:
                return method(*a, **k)
            finally:
                depth[0] -= 1
                if outer:
                    phases[name] += time.perf_counter() - began

        return run

    info: dict = {}

    class TruncatedKCenterGreedy(KCenterGreedy):
        """Stock's sampler, stopped after K picks; times projection and picks apart."""

        def select_coreset_idxs(self):
            info["coreset_size"] = self.coreset_size
            if args.stock_picks:
                self.coreset_size = min(self.coreset_size, args.stock_picks)
            info["picks_timed"] = self.coreset_size
            projection = time_projection(self)
            began = time.perf_counter()
            idxs = super().select_coreset_idxs()
            info["picks_s"] = time.perf_counter() - began - projection[0]
            phases["projection"] += projection[0]
            info["first_picks"] = idxs
            return idxs

    torch_model.KCenterGreedy = TruncatedKCenterGreedy

    seed_everything(args.seed, workers=True, verbose=False)
    size = args.image_size
    model = Patchcore(
        backbone=args.backbone,
        layers=["layer2", "layer3"],
        pre_trained=False,
        coreset_sampling_ratio=args.ratio,
        pre_processor=Patchcore.configure_pre_processor(image_size=(size, size)),
        visualizer=False,
    )
    inner = model.model
    inner.feature_extractor.forward = timed("backbone", inner.feature_extractor.forward)
    inner.nearest_neighbors = timed("scoring", inner.nearest_neighbors)
    inner.compute_anomaly_score = timed("scoring", inner.compute_anomaly_score)
    inner.anomaly_map_generator.forward = timed("scoring", inner.anomaly_map_generator.forward)
    for callback in (model.post_processor, model.evaluator):
        for hook in ("on_validation_batch_end", "on_validation_epoch_end", "on_test_batch_end", "on_test_epoch_end"):
            if hasattr(callback, hook):
                setattr(callback, hook, timed("metrics", getattr(callback, hook)))
    subsample = inner.subsample_embedding

    def subsample_then_full_bank(sampling_ratio):
        subsample(sampling_ratio)
        state = torch.load(args.bank_from, map_location="cpu", weights_only=True)["state_dict"]
        theirs, ours = inner.memory_bank, state["model.memory_bank"]
        # The bank is the picked rows in pick order: stock's first K rows against adrun's
        # first K (the same picks give rows equal up to the backbone's rounding).
        k = min(len(theirs), len(ours))
        info["first_picks_max_abs_diff"] = float((theirs[:k] - ours[:k]).abs().max()) if k else float("nan")
        info["first_picks_compared"] = k
        if args.stock_picks:
            # Score with a bank of the real size, so the scoring phases cost what they do.
            inner.memory_bank = ours

    inner.subsample_embedding = subsample_then_full_bank
    datamodule = MVTecAD(
        root=args.root,
        category=CATEGORY,
        train_batch_size=args.batch,
        eval_batch_size=args.batch,
        num_workers=0,
        seed=args.seed,
    )
    work = Path(args.out).parent / "stock"
    engine = Engine(
        default_root_dir=work,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ModelCheckpoint(dirpath=work, save_top_k=0, save_last=False)],
        deterministic="warn",
        accelerator="cpu",
        devices=1,
        max_epochs=1,
    )
    began = time.perf_counter()
    engine.fit(model=model, datamodule=datamodule)
    fit_s = time.perf_counter() - began
    began = time.perf_counter()
    results = engine.test(model=model, datamodule=datamodule, verbose=False)
    test_s = time.perf_counter() - began
    measured_picks = info["picks_s"]
    full = info["coreset_size"]
    # Every stock pick is one pass over N x D: the time per pick is flat, so scale linearly
    # (the loop runs coreset_size - 1 times).
    loops = info["picks_timed"] - 1
    phases["coreset"] = measured_picks / loops * (full - 1) if loops > 0 else measured_picks
    extrapolated = phases["coreset"] - measured_picks
    summary = {
        "phases": phases,
        "fit": fit_s + extrapolated,
        "test": test_s,
        "cell": fit_s + test_s + extrapolated,
        "extrapolated_s": extrapolated,
        "picks_timed": info["picks_timed"],
        "coreset_size": full,
        "first_picks_max_abs_diff": info["first_picks_max_abs_diff"],
        "first_picks_compared": info["first_picks_compared"],
        "metrics": {k: float(v) for k, v in (results[0] if results else {}).items() if k in METRICS},
    }
    Path(args.out).write_text(json.dumps(summary))


def stock_run(root: Path, work: Path, args: argparse.Namespace, bank_from: Path) -> dict:
    out = work / "stock.json"
    cmd = [
        sys.executable,
        __file__,
        "--stock-child",
        "--root",
        str(root),
        "--out",
        str(out),
        "--bank-from",
        str(bank_from),
        "--stock-picks",
        str(args.stock_picks),
        "--seed",
        str(args.seed),
        "--image-size",
        str(args.image_size),
        "--backbone",
        args.backbone,
        "--ratio",
        str(args.ratio),
        "--batch",
        str(args.batch),
    ]
    env = child_env()
    if args.stock_thp:
        env["THP_MEM_ALLOC_ENABLE"] = "1"
    else:
        env.pop("THP_MEM_ALLOC_ENABLE", None)  # as anomalib ships; adrun's CLI sets it to 1
    code, wall, rss, output = run_measured(cmd, env=env)
    if code != 0:
        raise SystemExit(f"stock Patchcore failed (exit {code}):\n{output[-3000:]}")
    summary = json.loads(out.read_text())
    summary["rss"] = rss
    summary["wall"] = wall + summary["extrapolated_s"]
    return summary


# --------------------------------------------------------------------------- CPU rates


def gemm_rate() -> dict:
    """GFLOPS of a 2048^3 GEMM on all threads, fp32 and bf16, on the faster of torch.matmul
    (its BLAS: MKL for fp32) and oneDNN (what adrun's search and the convolutions use):
    the rate this CPU reaches, as a stand-in for its peak."""
    import torch

    from adrun.models.patchcore.search import _has_onednn, _onednn

    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(2048, 2048).to(dtype)
        b = torch.randn(2048, 2048).to(dtype)
        bias = torch.zeros(2048)
        kernels = {"torch.matmul": lambda a=a, b=b: torch.matmul(a, b)}
        if _has_onednn():
            kernels["oneDNN"] = lambda a=a, b=b, bias=bias: _onednn(a, b, bias)
        rates = {}
        for kernel, run in kernels.items():
            run()
            best = float("inf")
            for _ in range(3):
                began = time.perf_counter()
                run()
                best = min(best, time.perf_counter() - began)
            rates[kernel] = 2 * 2048**3 / best / 1e9
        fastest = max(rates, key=rates.__getitem__)
        out[name] = rates[fastest]
        out[f"{name}_kernel"] = fastest
        out[f"{name}_all"] = rates
    return out


def backbone_variants(args: argparse.Namespace) -> dict[str, float]:
    """ms per image of the backbone alone on one batch: anomalib's NCHW under no_grad, adrun's
    channels_last under inference_mode, and bf16 autocast on top; rounds interleaved, best kept."""
    import torch
    from anomalib.models.components import TimmFeatureExtractor

    extractor = TimmFeatureExtractor(backbone=args.backbone, pre_trained=False, layers=["layer2", "layer3"]).eval()
    images = torch.rand(args.batch, 3, args.image_size, args.image_size)

    def nchw():
        extractor.to(memory_format=torch.contiguous_format)
        with torch.no_grad():
            extractor(images)

    def nhwc(bf16=False):
        extractor.to(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            extractor(images.contiguous(memory_format=torch.channels_last))

    variants = {
        "fp32 NCHW, no_grad (anomalib)": nchw,
        "fp32 channels_last, inference_mode (adrun)": nhwc,
        "bf16 autocast, channels_last (adrun bf16)": lambda: nhwc(bf16=True),
    }
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(3):  # the first round includes oneDNN's primitive creation
        for name, run in variants.items():
            began = time.perf_counter()
            run()
            best[name] = min(best[name], 1e3 * (time.perf_counter() - began) / args.batch)
    return best


def backbone_flops(args: argparse.Namespace) -> float:
    """FLOPs of one image through the backbone up to the last layer Patchcore uses (convs and linears)."""
    import torch
    from anomalib.models.components import TimmFeatureExtractor

    extractor = TimmFeatureExtractor(backbone=args.backbone, pre_trained=False, layers=["layer2", "layer3"]).eval()
    total = [0.0]

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            kh, kw = module.kernel_size
            total[0] += 2.0 * output.numel() * (module.in_channels // module.groups) * kh * kw

    handles = [m.register_forward_hook(hook) for m in extractor.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.inference_mode():
        extractor(torch.zeros(1, 3, args.image_size, args.image_size))
    for h in handles:
        h.remove()
    return total[0]


# --------------------------------------------------------------------------- search alone


def search_bench(root: Path, checkpoint: Path, args: argparse.Namespace) -> dict[str, dict]:
    """anomalib's chunked search against adrun's, on real embeddings and the real bank.

    The model is rebuilt from the fp32 run's checkpoint (loaded weights_only); the
    queries are the first test images' patch embeddings, as the test step computes them.
    """
    import torch
    from PIL import Image
    from torchvision.transforms.v2.functional import normalize, pil_to_tensor, resize

    from adrun.models.patchcore.lightning import AdrunPatchcore
    from adrun.models.patchcore.search import Bank, nearest, nearest_bf16
    from adrun.precision import native_bf16

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    model = AdrunPatchcore(backbone=args.backbone, layers=["layer2", "layer3"], pre_trained=False)
    model.model.memory_bank = state["model.memory_bank"]
    model.load_state_dict({k: v for k, v in state.items() if k.startswith("model.")}, strict=False)
    model.eval()
    paths = sorted((root / CATEGORY / "test").rglob("*.png"))[: args.search_images]
    images = torch.stack(
        [
            normalize(
                resize(pil_to_tensor(Image.open(p).convert("RGB")).float() / 255, [args.image_size] * 2),
                [0.485, 0.456, 0.406],
                [0.229, 0.224, 0.225],
            )
            for p in paths
        ]
    )
    embedding, _ = model._embedding(images)
    bank = model.model.memory_bank
    searches = {
        STOCK_SEARCH: lambda: model.model.nearest_neighbors(embedding, n_neighbors=1),
        "adrun fp32 (norms in the GEMM)": lambda: nearest(embedding, adrun_bank),
        BF16_SEARCH: lambda: nearest_bf16(embedding, adrun_bank, stats),
    }
    adrun_bank = Bank(bank)  # built once, as a run does; the GEMM kernel is chosen here, untimed
    adrun_bank.gemm()
    if native_bf16()[0]:
        adrun_bank.bf16()
    out: dict[str, dict] = {}
    reference = None
    stats: dict[str, int] = {}
    with torch.inference_mode():
        for name, run in searches.items():
            began = time.perf_counter()
            scores, rows = run()
            seconds = time.perf_counter() - began
            if reference is None:
                reference = (scores, rows)
            rel = max_rel(scores, reference[0])
            # Each search's own distances against float64 on the rows it found: how far
            # fp32's rounding of ||x||^2 - 2 x.y + ||y||^2 takes stock and adrun alike.
            truth = (embedding.double() - bank[rows].double()).norm(dim=1)
            error = max_rel(scores, truth)
            out[name] = {
                "seconds": seconds,
                "rows_equal": float((rows == reference[1]).float().mean()),
                "max_rel": rel,
                "f64_rel": error,
            }
    out["gemm"] = dict(adrun_bank.kernels)
    out[BF16_SEARCH]["proven"] = stats["proven"] / max(1, stats["queries"])
    return out


# --------------------------------------------------------------------------- equality checks


def float64_maps(inner, images):
    """anomalib's anomaly maps for ``images`` with every distance in float64: the truth both searches round."""
    import torch

    features = inner.feature_extractor(images)
    features = {layer: inner.feature_pooler(f) for layer, f in features.items()}
    embedding = inner.generate_embedding(features)
    batch, _, width, height = embedding.shape
    rows = inner.reshape_embedding(embedding).double()
    distances = torch.cdist(rows, inner.memory_bank.double(), compute_mode="donot_use_mm_for_euclid_dist")
    patch_scores = distances.min(1).values.reshape(batch, 1, width, height)
    generator = copy.deepcopy(inner.anomaly_map_generator).double()  # its blur kernel in float64 too
    return generator(patch_scores, images.shape[-2:])


def equality_checks(work: Path, args: argparse.Namespace) -> dict:
    """Stock and adrun Patchcore on a small category, fitted and tested from the same seed."""
    import numpy as np
    import torch
    from anomalib.callbacks.checkpoint import ModelCheckpoint
    from anomalib.data import MVTecAD
    from anomalib.engine import Engine
    from anomalib.models import Patchcore
    from anomalib.models.components.sampling import KCenterGreedy
    from lightning.pytorch import seed_everything

    from adrun.models.patchcore.coreset import FastKCenterGreedy
    from adrun.models.patchcore.lightning import AdrunPatchcore

    root = work / "check-data"
    make_data(root, args.check_size, args.check_n_train, args.check_n_test, args.seed)
    size = args.check_size
    picked: dict[str, list[int]] = {}
    embeddings: dict[str, torch.Tensor] = {}
    results = {}
    original = {cls: cls.select_coreset_idxs for cls in (KCenterGreedy, FastKCenterGreedy)}

    def spy(name):
        def select(self):
            embeddings[name] = self.embedding.clone()
            idxs = original[type(self) if type(self) in original else KCenterGreedy](self)
            picked[name] = list(idxs)
            return idxs

        return select

    variants = (
        ("stock", Patchcore, None),
        ("adrun", AdrunPatchcore, torch.channels_last),
        ("adrun-nchw", AdrunPatchcore, torch.contiguous_format),
    )
    for name, cls, memory_format in variants:
        KCenterGreedy.select_coreset_idxs = spy(name)
        FastKCenterGreedy.select_coreset_idxs = spy(name)
        if memory_format is not None:
            AdrunPatchcore.memory_format = memory_format
        try:
            seed_everything(args.seed, workers=True, verbose=False)
            model = cls(
                backbone=args.backbone,
                layers=["layer2", "layer3"],
                pre_trained=False,
                coreset_sampling_ratio=args.ratio,
                pre_processor=cls.configure_pre_processor(image_size=(size, size)),
                visualizer=False,
            )
            datamodule = MVTecAD(
                root=root,
                category=CATEGORY,
                train_batch_size=args.batch,
                eval_batch_size=args.batch,
                num_workers=0,
                seed=args.seed,
            )
            engine = Engine(
                default_root_dir=work / f"check-{name}",
                logger=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                deterministic="warn",
                accelerator="cpu",
                devices=1,
                max_epochs=1,
                callbacks=[ModelCheckpoint(dirpath=work / f"check-{name}", save_top_k=0, save_last=False)],
            )
            engine.fit(model=model, datamodule=datamodule)
            metrics = engine.test(model=model, datamodule=datamodule, verbose=False)[0]
        finally:
            for klass, method in original.items():
                klass.select_coreset_idxs = method
        maps, scores, truth = [], [], []
        model.eval()
        try:
            with torch.inference_mode():
                for batch in datamodule.test_dataloader():
                    images = model.pre_processor.transform(batch.image)
                    out = model._predict(images) if name != "stock" else model.model(images)._asdict()
                    maps.append(out["anomaly_map"])
                    scores.append(out["pred_score"])
                    if name == "stock":
                        truth.append(float64_maps(model.model, images))
        finally:
            AdrunPatchcore.memory_format = torch.channels_last
        results[name] = {
            "bank": model.model.memory_bank.clone(),
            "metrics": {k: float(v) for k, v in metrics.items()},
            "maps": torch.cat(maps),
            "scores": torch.cat(scores),
            **({"truth": torch.cat(truth)} if truth else {}),
        }
    stock, fast, nchw = results["stock"], results["adrun"], results["adrun-nchw"]
    # The sampler alone: stock's KCenterGreedy on adrun's own embedding, from the same seed state.
    seed_everything(args.seed, workers=True, verbose=False)
    rng = torch.get_rng_state(), np.random.get_state()
    expected = KCenterGreedy(embeddings["adrun"], args.ratio).select_coreset_idxs()
    torch.set_rng_state(rng[0])
    np.random.set_state(rng[1])
    again = FastKCenterGreedy(embeddings["adrun"], args.ratio).select_coreset_idxs()

    rel = max_rel(fast["maps"], stock["maps"])
    # Against the float64 maps (stock's bank and embedding; the NCHW variant has both bitwise).
    truth_error = {key: max_rel(results[key]["maps"], stock["truth"]) for key in ("stock", "adrun-nchw")}
    rel_scores = max_rel(fast["scores"], stock["scores"])
    embedding_diff = float((embeddings["adrun"] - embeddings["stock"]).abs().max())
    # Relative to the map's range: where a distance is small next to the feature norms,
    # anomalib's |x|^2 - 2xy + |y|^2 magnifies the backbone's last-bit differences.
    range_rel = max_range_rel(fast["maps"], stock["maps"])
    nchw_equal = {"bank": torch.equal(nchw["bank"], stock["bank"])}
    nchw_equal["picks"] = picked["adrun-nchw"] == picked["stock"]
    nchw_equal["embedding"] = torch.equal(embeddings["adrun-nchw"], embeddings["stock"])
    nchw_bitwise = all(nchw_equal.values())
    # adrun's search measures ||x - y|| to the row it finds; stock's ||x||^2 - 2 x.y + ||y||^2
    # cancels near a bank row. Their maps differ by stock's own rounding there.
    nchw_rel = max(max_rel(nchw[k], stock[k]) for k in ("maps", "scores"))
    nchw_range_rel = max_range_rel(nchw["maps"], stock["maps"])
    checks = {
        "sampler: adrun's picks == stock KCenterGreedy's on the same embedding": again == expected,
        "with an NCHW backbone: embedding, coreset indices and memory bank bitwise stock's": nchw_bitwise,
        "with an NCHW backbone: maps at least as close to float64's as stock's are": (
            truth_error["adrun-nchw"] <= truth_error["stock"]
        ),
        "with an NCHW backbone: maps within 1e-5 of stock's, relative to the map's range": nchw_range_rel <= 1e-5,
        "with an NCHW backbone: image scores within relative 1e-5 of stock's": (
            max_rel(nchw["scores"], stock["scores"]) <= 1e-5
        ),
        "with an NCHW backbone: every metric within 1e-5 of stock's": all(
            abs(nchw["metrics"][k] - v) <= 1e-5 for k, v in stock["metrics"].items()
        ),
        "adrun (channels_last): maps within 1e-5 of stock's, relative to the map's range": range_rel <= 1e-5,
        "adrun (channels_last): image scores within relative 1e-5 of stock's": rel_scores <= 1e-5,
        "adrun (channels_last): every metric equal to stock's at 4 decimals": all(
            round(fast["metrics"][k], 4) == round(v, 4) for k, v in stock["metrics"].items()
        ),
    }
    # channels_last rounds the convolutions differently (~1e-7): k-center-greedy's argmax
    # can then fall on the other row of a near-tie, so these are reported, not required.
    same_picks = picked["adrun"] == picked["stock"]
    first_diff = next(
        (i for i, (a, b) in enumerate(zip(picked["adrun"], picked["stock"], strict=False)) if a != b), None
    )
    return {
        "same_picks": same_picks,
        "first_diff": first_diff,
        "truth_error": truth_error,
        "nchw_range_rel": nchw_range_rel,
        "checks": checks,
        "n": embeddings["adrun"].shape[0],
        "picks": len(picked["adrun"]),
        "bank_bitwise": bool(torch.equal(fast["bank"], stock["bank"])),
        "embedding_max_abs_diff": embedding_diff,
        "maps_max_rel": rel,
        "scores_max_rel": rel_scores,
        "maps_range_rel": range_rel,
        "nchw_equal": nchw_equal,
        "nchw_rel": nchw_rel,
        "metrics": {"stock": stock["metrics"], "adrun": fast["metrics"]},
    }


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-train", type=int, default=242, help="training images (MVTec AD's average: 242)")
    parser.add_argument("--n-test", type=int, default=110, help="test images (MVTec AD's average: 110)")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--backbone", default="wide_resnet50_2")
    parser.add_argument("--ratio", type=float, default=0.1, help="coreset_sampling_ratio")
    parser.add_argument("--batch", type=int, default=16, help="train and eval batch size")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--precision", choices=("fp32", "bf16", "both"), default="fp32")
    parser.add_argument("--stock", action="store_true", help="also run anomalib's own Patchcore and print ratios")
    parser.add_argument(
        "--stock-picks",
        type=int,
        default=300,
        help="time stock's first K coreset picks and extrapolate (0: run all of them)",
    )
    parser.add_argument(
        "--stock-thp",
        action="store_true",
        help="give stock the THP_MEM_ALLOC_ENABLE=1 that adrun's CLI sets (default: as anomalib ships)",
    )
    parser.add_argument(
        "--backbone-variants",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="time the backbone alone: NCHW, channels_last, bf16",
    )
    parser.add_argument(
        "--check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the equality checks on a smaller category",
    )
    parser.add_argument(
        "--search",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="time the nearest-neighbour search alone: anomalib's, adrun's fp32, adrun's bf16 filter",
    )
    parser.add_argument("--search-images", type=int, default=16, help="test images in the search timing")
    parser.add_argument("--check-n-train", type=int, default=24)
    parser.add_argument("--check-n-test", type=int, default=12)
    parser.add_argument("--check-size", type=int, default=128)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temp folder)")
    parser.add_argument("--stock-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--bank-from", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    if args.stock_child:
        stock_child(args)
        return
    from adrun.precision import ask_for_huge_pages

    ask_for_huge_pages()  # the backbone-alone and search-alone timings run here, as adrun's CLI runs

    print(f"before: {load()}", flush=True)
    work_ctx = tempfile.TemporaryDirectory(prefix="bench_category_") if args.keep is None else None
    work = Path(work_ctx.name) if work_ctx else args.keep
    work.mkdir(parents=True, exist_ok=True)
    try:
        report(work, args)
    finally:
        if work_ctx:
            work_ctx.cleanup()
        print(f"after: {load()}")


def report(work: Path, args: argparse.Namespace) -> None:
    import torch

    from adrun.precision import native_bf16

    root = work / "data"
    made = make_data(root, args.image_size, args.n_train, args.n_test, args.seed)
    good, per_defect = split_test(args.n_test)
    side = args.image_size // 8
    n = args.n_train * side * side
    print(
        f"data: adrun.synthetic, {CATEGORY}: {args.n_train} train + {good} good + 4 x {per_defect} defective "
        f"test images at {args.image_size} px (written in {made:.1f} s, not timed below)"
    )
    print(
        f"model: Patchcore({args.backbone}, layer2+layer3, pre_trained=False), coreset {args.ratio:.0%}: "
        f"N = {n:,} patches, {int(n * args.ratio):,} picks; batch {args.batch}; "
        f"torch threads {torch.get_num_threads()}, os.cpu_count() {os.cpu_count()}"
    )
    native, why = native_bf16()
    print(f"bf16: {'native (' + why + ')' if native else 'not native: ' + why}")
    precisions = ["fp32", "bf16"] if args.precision == "both" else [args.precision]
    columns: dict[str, dict] = {}
    for precision in precisions:
        print(f"running adrun sweep, precision {precision} ...", flush=True)
        columns[f"adrun {precision}"] = adrun_sweep(root, work, args, precision)
        used = columns[f"adrun {precision}"]["runtime"].get("precision", {})
        if used.get("asked") != used.get("used"):
            print(f"  note: {used.get('note')}")
    first = columns[f"adrun {precisions[0]}"]
    stock_note = ""
    if args.stock:
        print(f"running anomalib's Patchcore (coreset: first {args.stock_picks or 'all'} picks timed) ...", flush=True)
        stock = stock_run(root, work, args, first["checkpoint"])
        columns = {"stock": stock, **columns}
        if stock["picks_timed"] < stock["coreset_size"]:
            stock_note = (
                f"stock coreset: {stock['picks_timed']} of {stock['coreset_size']} picks timed, "
                f"extrapolated (+{stock['extrapolated_s']:.0f} s in its fit, cell and total)\n"
            )
        stock_note += (
            "stock ran with THP_MEM_ALLOC_ENABLE=1, as adrun's CLI sets it"
            if args.stock_thp
            else "stock ran as anomalib ships, without THP_MEM_ALLOC_ENABLE (adrun's CLI sets it to 1; --stock-thp)"
        )
    for column in columns.values():
        add_other(column)
    print()
    print_table(columns, stock_note)
    print()
    print("metrics:")
    for name, column in columns.items():
        print(f"  {name:>10}: " + "  ".join(f"{k} {column['metrics'].get(k, float('nan')):.4f}" for k in METRICS))
    if "adrun bf16" in columns and "adrun fp32" in columns:
        deltas = {k: columns["adrun bf16"]["metrics"][k] - columns["adrun fp32"]["metrics"][k] for k in METRICS}
        print("  bf16 - fp32: " + "  ".join(f"{k} {v:+.4f}" for k, v in deltas.items()))
        worst = max(abs(deltas["image_AUROC"]), abs(deltas["pixel_AUROC"]))
        print(f"  every AUROC within 0.002 of fp32: {worst <= 0.002} (largest |delta| {worst:.4f})")
    if "stock" in columns:
        for name in (c for c in columns if c != "stock"):
            cell = columns["stock"]["cell"] / columns[name]["cell"]
            wall = columns["stock"]["wall"] / columns[name]["wall"]
            print(f"speed-up {name} vs stock: {cell:.1f}x per cell (fit + test), {wall:.1f}x whole command")
        if "adrun fp32" in columns:
            mine = first["runtime"]
            k = columns["stock"]["picks_timed"]
            print(
                f"  (adrun reused {mine.get('test_batches_reused', 0)} validated batches in test; "
                f"stock's first {k} picks timed)"
            )
    for name, column in columns.items():
        if name != "stock":
            print(
                f"15 categories like this one, {name}: {15 * column['wall'] / 60:.0f} min"
                + (f" (stock: {15 * columns['stock']['wall'] / 3600:.1f} h)" if "stock" in columns else "")
            )

    if args.search:
        print()
        print(f"nearest-neighbour search alone, {args.search_images} test images against the fp32 run's bank ...")
        search = search_bench(root, first["checkpoint"], args)
        stock_s = search[STOCK_SEARCH]["seconds"]
        kernels = search.pop("gemm")
        print("  adrun's GEMM kernels, timed on this CPU: " + ", ".join(f"{k} {v}" for k, v in kernels.items()))
        for name, row in search.items():
            extra = f", {row['proven']:.1%} of queries proven exact" if "proven" in row else ""
            print(
                f"  {name:<36} {row['seconds']:6.1f} s  {stock_s / row['seconds']:4.1f}x anomalib's  "
                f"rows equal to anomalib's: {row['rows_equal']:.2%}  distances max rel diff "
                f"{row['max_rel']:.1e} (vs float64: {row['f64_rel']:.1e}){extra}"
            )
    rates = gemm_rate()
    flops = backbone_flops(args)
    images = args.n_train + args.n_test
    print()
    print(
        f"GEMM rate of this CPU (2048^3, {torch.get_num_threads()} threads, the faster kernel): "
        + ", ".join(
            f"{d} {rates[d]:.0f} GFLOPS (" + ", ".join(f"{k} {v:.0f}" for k, v in rates[f"{d}_all"].items()) + ")"
            for d in ("fp32", "bf16")
        )
    )
    print(f"backbone: {flops / 1e9:.1f} GFLOP per image, {images} images scored once each")
    if args.backbone_variants:
        print(f"  backbone alone, one batch of {args.batch} ({load()}):")
        for name, ms in backbone_variants(args).items():
            rate = flops / ms / 1e6
            ref = rates["bf16"] if name.startswith("bf16") else rates["fp32"]
            print(
                f"    {name:<44} {ms:6.0f} ms per image  {rate:5.0f} GFLOPS = {rate / ref:.0%} of the "
                f"{name[:4]} GEMM rate"
            )
    for name, column in columns.items():
        seconds = column["phases"].get("backbone", 0.0)
        if not seconds:
            continue
        # Stock runs the backbone over the test set twice (validation, then test).
        count = images + (args.n_test if name == "stock" else 0)
        rate = flops * count / seconds / 1e9
        ref = rates["bf16"] if name.endswith("bf16") else rates["fp32"]
        print(
            f"  {name:>10}: {1e3 * seconds / count:.0f} ms per image, {rate:.0f} GFLOPS = {rate / ref:.0%} of "
            f"the {'bf16' if name.endswith('bf16') else 'fp32'} GEMM rate"
        )
    if "stock" in columns:
        k, diff = columns["stock"]["first_picks_compared"], columns["stock"]["first_picks_max_abs_diff"]
        print(
            f"\nbench size: stock's first {k} picks (on its own NCHW features) against adrun's first {k}: "
            f"memory-bank rows differ by at most {diff:.1e}; same picks: {diff <= 1e-5}"
        )
    if args.check:
        print()
        print(
            f"equality checks (smaller category: {args.check_n_train} train + {args.check_n_test} test at "
            f"{args.check_size} px) ...",
            flush=True,
        )
        result = equality_checks(work, args)
        print(
            f"  N = {result['n']:,}, {result['picks']} picks; embeddings differ by at most "
            f"{result['embedding_max_abs_diff']:.1e} (channels_last rounding); "
            f"maps max rel diff {result['maps_max_rel']:.1e} "
            f"({result['maps_range_rel']:.1e} of the map's range); "
            f"image scores {result['scores_max_rel']:.1e}"
        )
        print(
            f"  NCHW variant, bitwise equal to stock: {result['nchw_equal']}; maps and scores max rel diff "
            f"{result['nchw_rel']:.1e} ({result['nchw_range_rel']:.1e} of the map's range)"
        )
        errors = result["truth_error"]
        print(
            f"  maps against float64 (max relative error): stock {errors['stock']:.1e}, "
            f"adrun NCHW {errors['adrun-nchw']:.1e}"
        )
        print(
            f"  channels_last: coreset picks equal to stock's end to end: {result['same_picks']}"
            + (f" (first difference at pick {result['first_diff']})" if result["first_diff"] is not None else "")
            + f"; memory bank bitwise equal: {result['bank_bitwise']}"
        )
        for label, ok in result["checks"].items():
            print(f"  [{'PASS' if ok else 'FAIL'}] {label}")
        for name, metrics in result["metrics"].items():
            print(f"  {name:>6}: " + "  ".join(f"{k} {metrics.get(k, float('nan')):.4f}" for k in METRICS))


if __name__ == "__main__":
    main()
