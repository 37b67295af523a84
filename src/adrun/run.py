"""Run one cell: build, fit, test, collect anomalib's metrics -> a record.

``run_cell`` is a plain function returning the record, so tests call it directly;
the CLI and the sweep are its users. Also: re-test and predict from a run folder.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adrun.checks import IMAGE_SUFFIXES
from adrun.config import Cell
from adrun.errors import AdrunError, DiskFullError, RunError
from adrun.models import spec_of
from adrun.records import RECORD, atomic_write, now, read_record, run_dir, versions, write_record

CHECKPOINT = "model.ckpt"
LOG = "log.txt"
# Loggers whose INFO chatter ("GPU available", tips, hub retries) belongs in log.txt, not the terminal.
NOISY = (
    "lightning",
    "lightning.pytorch",
    "lightning.fabric",
    "pytorch_lightning",
    "lightning_fabric",
    "lightning_utilities",
    "torchmetrics",
    "huggingface_hub",
    "anomalib",
    "timm",
    "py.warnings",
    "adrun",
    "mlflow",
)


@contextlib.contextmanager
def cell_log(folder: Path) -> Iterator[logging.Handler]:
    """Send the cell's library logs and warnings to ``<run>/log.txt`` for the cell's duration."""
    # Lightning and friends add their console handlers when first imported: import them
    # before the swap below, or a handler added later still prints to the terminal.
    # Their import-time deprecation warnings concern anomalib's internals, not the user.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import anomalib.engine  # noqa: F401

    folder.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(folder / LOG, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    loggers = [logging.getLogger(name) for name in NOISY]
    # Lightning installs its own console handlers; swap them out, not just add ours.
    saved = [(lg, lg.level, lg.propagate, list(lg.handlers)) for lg in loggers]
    logging.captureWarnings(True)
    for lg in loggers:
        lg.handlers = [handler]
        lg.setLevel(logging.INFO)
        lg.propagate = False
    try:
        yield handler
    finally:
        for lg, level, propagate, handlers in saved:
            lg.handlers = handlers
            lg.setLevel(level)
            lg.propagate = propagate
        logging.captureWarnings(False)
        handler.close()


def base_record(cell: Cell, root: Path) -> dict[str, Any]:
    return {
        "status": "running",
        "label": cell.label,
        "folder": cell.folder,
        "model": cell.model.name,
        "category": cell.category,
        "index": cell.index,
        "category_index": cell.category_index,
        "key": cell.key,
        "seed": cell.seed,
        "smoke": cell.smoke,
        "data_root": str(root),
        "config": cell.model_dump(mode="json"),
        "weights": spec_of(cell.model).sources(cell.model),
        "versions": versions(),
        "metrics": {},
        "metric_settings": {},
        "seconds": {},
        "timing": {},
        "checkpoint": None,
        "error": None,
        "started_at": now(),
        "finished_at": None,
        # Where it ran: the process, and the GPUs it could see (set per worker by --jobs, by Ray per task).
        "pid": os.getpid(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _metrics(results: list[dict], cell: Cell) -> dict[str, float]:
    """The values anomalib's Evaluator computed for the cell's ``metrics:``, in config order."""
    merged: dict[str, float] = {}
    for result in results or []:
        merged.update({k: float(v) for k, v in result.items()})
    return {m.name: merged[m.name] for m in cell.metrics if m.name in merged}


def _anomalib_class(datamodule) -> str:
    """The anomalib datamodule under adrun's guards (``anomalib.data.Visa``): which reader and split ran."""
    base = next((c for c in type(datamodule).__mro__ if c.__module__.startswith("anomalib.")), type(datamodule))
    return f"anomalib.data.{base.__name__}"


NO_MASKS = "not available: the test set has no ground-truth masks"


def _unavailable(results: list[dict], cell: Cell, datamodule) -> dict[str, str]:
    """The pixel metrics asked for that anomalib could not compute because there are no masks.

    adrun's pixel metrics are not strict (registry.build_metric): on an image-labels-only
    dataset anomalib skips them, and the record says so instead of leaving them out.
    """
    task = getattr(getattr(datamodule, "test_data", None), "task", None)
    if getattr(task, "value", task) != "classification":
        return {}
    computed = {k for result in results or [] for k in result}
    return {m.name: NO_MASKS for m in cell.metrics if m.name.startswith("pixel_") and m.name not in computed}


def _metric_settings(cell: Cell) -> dict[str, dict[str, Any]]:
    # AUPRO's formula changed within anomalib's history (PR #3115): a value is only
    # comparable with the class, settings and anomalib version it was computed with.
    from adrun import registry

    anomalib = versions()["anomalib"]
    return {m.name: {**registry.metric_settings(m), "anomalib": anomalib} for m in cell.metrics}


def _build(
    cell: Cell,
    root: Path,
    exp_dir: Path,
    folder: Path,
    *,
    track: bool = False,
    devices: int | None = None,
    callbacks: list | tuple = (),
):
    from adrun import registry

    datamodule = registry.build_datamodule(cell, root)
    model = registry.build_model(cell, exp_dir)
    logger = registry.build_logger(cell, exp_dir) if track else False
    engine = registry.build_engine(cell, folder / "anomalib", logger=logger, devices=devices, callbacks=callbacks)
    return datamodule, model, engine


class PeakMemory:
    """Peak resident memory of this process from now on, and peak CUDA memory when CUDA is in use.

    Linux lets a process reset its own peak RSS (``/proc/self/clear_refs``), so the figure
    is the cell's own even when one process runs many cells; elsewhere it is the process's
    peak so far (``peak_rss_scope: process``).
    """

    def __init__(self) -> None:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak only, nothing else
            self.scope = "cell"
        except OSError:
            self.scope = "process"
        self._cuda = _cuda_in_use()
        if self._cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {"peak_rss_mb": round(_peak_rss_bytes() / 2**20, 1), "peak_rss_scope": self.scope}
        if self._cuda or _cuda_in_use():
            import torch

            out["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        return out


def _cuda_in_use() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_initialized()


def _peak_rss_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


def timing(fit_s: float, test_s: float, n_test: int, memory: dict[str, Any]) -> dict[str, Any]:
    """The record's cost figures. Test time is engine.test() wall time: loading, scoring, metrics."""
    return {
        "fit_s": round(fit_s, 3),
        "test_s": round(test_s, 3),
        "test_images": n_test,
        # Four significant digits: images/s spans 0.1 (a slow model on a busy CPU) to 1000s (GPU).
        "test_ms_per_image": float(f"{1000 * test_s / n_test:.4g}") if n_test else None,
        "images_per_s": float(f"{n_test / test_s:.4g}") if n_test and test_s > 0 else None,
        **memory,
    }


def _n_test(datamodule) -> int:
    try:
        return len(datamodule.test_data)
    except (AttributeError, TypeError):
        return 0


def _track_timing(engine, cost: dict[str, Any]) -> None:
    """Hand the cost figures to the cell's logger too, then close its run."""
    logger = engine.trainer.logger
    if logger is None:
        return
    logger.log_metrics({f"timing/{k}": float(v) for k, v in cost.items() if isinstance(v, int | float)})
    logger.finalize("success")


def run_cell(
    cell: Cell,
    root: Path,
    exp_dir: Path,
    sink: Callable[[Path, dict[str, Any]], None] = write_record,
    devices: int | None = None,
) -> dict[str, Any]:
    """Fit and test one cell; write and return its record. Failures are recorded, then re-raised.

    ``sink(folder, record)`` receives the record when the cell starts and when it ends. By
    default it writes ``record.json``; a Ray task passes one that keeps the record in memory,
    because there only the driver writes records. ``devices`` overrides ``trainer.devices``
    for this run only (not the record's config or key): a backend that pinned one GPU for
    the process passes 1.
    """
    folder = run_dir(exp_dir, cell.folder)  # refused if it would land outside exp_dir
    record = base_record(cell, root)
    sink(folder, record)
    # Everything after the "running" record sits inside the try, so a Ctrl-C at any
    # point (even while anomalib is still importing) ends as an "interrupted" record.
    try:
        with cell_log(folder):
            memory = PeakMemory()
            from lightning.pytorch import seed_everything

            from adrun.per_image import TestScores
            from adrun.samples import SampleCapture

            seed_everything(cell.seed, workers=True, verbose=False)
            scores, captured = TestScores(root), SampleCapture()
            datamodule, model, engine = _build(
                cell, root, exp_dir, folder, track=True, devices=devices, callbacks=[scores, captured]
            )
            start = time.perf_counter()
            engine.fit(model=model, datamodule=datamodule)
            fit_s = time.perf_counter() - start
            # The weights, settings and loop counters: what test, predict and export load. No
            # optimizer state (nothing resumes a fit), which is 2/3 of an Adam-trained checkpoint.
            atomic_write(folder / CHECKPOINT, lambda tmp: engine.trainer.save_checkpoint(tmp, weights_only=True))
            start = time.perf_counter()
            results = engine.test(model=model, datamodule=datamodule, verbose=False)
            test_s = time.perf_counter() - start
            test_scores = scores.write(folder)
            runtime = model_notes(model)  # before the sample grid adds its own predictions
            grid = sample_grid(engine, model, datamodule, cell, folder, captured)
            cost = timing(fit_s, test_s, _n_test(datamodule), memory.result())
            _track_timing(engine, cost)
        record.update(
            status="success",
            metrics=_metrics(results, cell),
            unavailable=_unavailable(results, cell, datamodule),
            datamodule=_anomalib_class(datamodule),
            metric_settings=_metric_settings(cell),
            seconds={"fit": round(fit_s, 3), "test": round(test_s, 3), "total": round(fit_s + test_s, 3)},
            timing=cost,
            checkpoint=CHECKPOINT,
            test_scores=test_scores,
        )
        if runtime:
            record["runtime"] = runtime
        note_samples(record, grid)
    except (KeyboardInterrupt, SystemExit):
        # Lightning turns Ctrl-C into SystemExit(1) after its own clean-up.
        record.update(status="interrupted", error="interrupted by the user")
        raise KeyboardInterrupt from None
    except OSError as exc:
        record.update(status="failed", error=one_line(exc))
        _log_traceback(folder)
        if exc.errno == errno.ENOSPC:
            raise DiskFullError(
                f"no space left on device while running {cell.label}/{cell.category}; "
                f"free space under {exp_dir} or set output: elsewhere, then rerun to resume"
            ) from exc
        raise
    except Exception as exc:
        record.update(status="failed", error=one_line(exc))
        _log_traceback(folder)
        raise
    finally:
        record["finished_at"] = now()
        try:
            sink(folder, record)
        except OSError:
            pass  # disk full: the previous record.json stays whole
    return record


def sample_grid(engine, model, datamodule, cell: Cell, folder: Path, captured=None) -> dict[str, Any]:
    """Write ``samples.png`` for a tested cell; returns what ``note_samples`` puts in the record.

    ``captured``: the ``SampleCapture`` that saw the test, so the grid needs no second pass.
    A grid that cannot be drawn is logged and noted, never a reason to lose the fit.
    """
    from adrun.samples import SAMPLES, write_samples

    start = time.perf_counter()
    try:
        write_samples(engine, model, datamodule, cell, folder / SAMPLES, captured)
    except Exception as exc:
        # Through logging, not _log_traceback: cell_log's handler still holds log.txt open.
        logging.getLogger("adrun").exception("sample grid failed")
        return {"samples": None, "samples_error": one_line(exc), "seconds": None}
    return {"samples": SAMPLES, "samples_error": None, "seconds": round(time.perf_counter() - start, 3)}


def model_notes(model) -> dict[str, Any]:
    """A model's own account of its run (``run_notes()``, where it has one): precision, phase seconds."""
    notes = getattr(model, "run_notes", None)
    return dict(notes()) if callable(notes) else {}


def note_samples(record: dict[str, Any], grid: dict[str, Any]) -> None:
    record.update(samples=grid["samples"], samples_error=grid["samples_error"])
    if grid["seconds"] is not None:
        record.setdefault("seconds", {})["samples"] = grid["seconds"]


def _log_traceback(folder: Path) -> None:
    try:
        with open(folder / LOG, "a", encoding="utf-8") as log:
            log.write(traceback.format_exc())
    except OSError:
        pass


def read_checkpoint(ckpt: Path, model_name: str) -> dict[str, Any]:
    """A checkpoint's contents through torch's weights-only unpickler; never runs code from the file.

    Only tensors, plain containers and the few types anomalib's checkpoints hold (its
    allow-list, plus the model's own) are rebuilt; a file holding anything else, or a
    truncated one, is one ``RunError`` line. Memory-mapped, so checking a large
    checkpoint reads little of it.
    """
    import pickle

    import torch

    with warnings.catch_warnings():  # import-time deprecations of anomalib's internals
        warnings.simplefilter("ignore")
        from adrun.registry import safe_globals

    fix = "rerun the cell to write a new one (adrun sweep CONFIG --force --only LABEL/CATEGORY)"
    try:
        with safe_globals(model_name), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Detected pickle protocol 4": Lightning's files, fine
            state = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f"it asks for {found.group(1)}" if found else "it holds more than tensors and settings"
        raise RunError(f"{ckpt}: refused: {what}, and adrun never unpickles code from a file; {fix}") from None
    except RuntimeError as exc:
        text = str(exc)
        reason = (
            "not a torch checkpoint (zip format)"
            if "mmap can only be used" in text
            else "truncated or corrupt (" + text.split(". ")[0].strip() + ")"
        )
        raise RunError(f"{ckpt}: {reason}; {fix}") from None
    except (EOFError, OSError, ValueError) as exc:
        raise RunError(f"{ckpt}: unreadable ({one_line(exc)}); {fix}") from None
    if not isinstance(state, dict) or not isinstance(state.get("state_dict"), dict):
        raise RunError(f"{ckpt}: not a Lightning checkpoint (no state_dict); {fix}")
    return state


def load_run(run: Path) -> tuple[dict[str, Any], Cell, Path]:
    """A successful run's record, its cell (as its checkpoint rebuilds it) and the checkpoint, checked safe to load."""
    record = read_record(run)
    ckpt = run / (record.get("checkpoint") or CHECKPOINT)
    if record.get("status") != "success" or not ckpt.is_file():
        raise RunError(f"{run}: no checkpoint from a successful fit; run `adrun train` or `adrun sweep` first")
    cell = Cell.model_validate(record["config"])
    # Checked here, before anomalib loads it again through Lightning: the same one-line
    # refusal for test, predict and export, whatever TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD says.
    read_checkpoint(ckpt, cell.model.name)
    # The model as its checkpoint rebuilds it (a backbone whose weights the checkpoint holds is built untrained).
    cell = cell.model_copy(update={"model": spec_of(cell.model).for_checkpoint(cell.model)})
    return record, cell, ckpt


def exp_dir_of(run: Path) -> Path:
    """The experiment folder of a run folder, by the record's own ``folder`` (else the folder above ``runs``)."""
    import json

    run = Path(run).absolute()
    try:
        folder = Path(json.loads((run / RECORD).read_text(encoding="utf-8"))["folder"])
        if len(folder.parts) <= len(run.parts) and Path(*run.parts[-len(folder.parts) :]) == folder:
            return run.parents[len(folder.parts) - 1]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    for parent in run.parents:
        if parent.name == "runs":
            return parent.parent
    raise RunError(f"{run}: not inside an experiment's runs/ folder; pass <exp>/runs/<label>/<category>/seed-<N>")


def test_run(run: Path) -> dict[str, Any]:
    """Test again from the run's checkpoint and refresh its record."""
    run = Path(run)
    record, cell, ckpt = load_run(run)
    root = Path(record["data_root"])
    with cell_log(run):
        from adrun.per_image import TestScores
        from adrun.samples import SampleCapture

        scores, captured = TestScores(root), SampleCapture()
        datamodule, model, engine = _build(cell, root, exp_dir_of(run), run, callbacks=[scores, captured])
        start = time.perf_counter()
        results = engine.test(model=model, datamodule=datamodule, ckpt_path=ckpt, verbose=False)
        test_s = time.perf_counter() - start
        record["test_scores"] = scores.write(run)
        grid = sample_grid(engine, model, datamodule, cell, run, captured)
        n_test = _n_test(datamodule)
    record["metrics"] = _metrics(results, cell)
    record["metric_settings"] = _metric_settings(cell)
    record["seconds"]["test"] = round(test_s, 3)
    # The fit's figures (fit_s, peak memory) stay; the test figures are this test's.
    fresh = timing(0.0, test_s, n_test, {})
    record["timing"] = {
        **record.get("timing", {}),
        **{k: fresh[k] for k in ("test_s", "test_images", "test_ms_per_image", "images_per_s")},
    }
    note_samples(record, grid)
    record["tested_at"] = now()
    write_record(run, record)
    return record


@dataclass
class Predictions:
    """What ``predict`` wrote: the folder, how many images, how many above the threshold."""

    out: Path
    images: int
    anomalous: int | None  # None: no threshold (the cell has none and none was given)
    threshold: float | None
    threshold_source: str  # "the cell's own threshold" or "--threshold"
    masks: bool


def predict_inputs(source: Path) -> list[Path]:
    """The images ``predict`` will score, as anomalib's PredictDataset finds them; one line for a bad one."""
    if not source.exists():
        raise AdrunError(f"{source}: no such image or folder; pass a path to an image or a folder of images")
    if source.is_dir() and not any(p.suffix.lower() in IMAGE_SUFFIXES for p in source.rglob("*")):
        raise AdrunError(f"{source}: no images here ({', '.join(sorted(IMAGE_SUFFIXES))})")
    if source.is_file() and source.suffix.lower() not in IMAGE_SUFFIXES:
        raise AdrunError(
            f"{source}: not an image file ({', '.join(sorted(IMAGE_SUFFIXES))}); pass an image or a folder of images"
        )
    from adrun.data import unreadable

    images = (
        [source]
        if source.is_file()
        else sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    )
    bad = [(p, why) for p in images if (why := unreadable(p))]
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise AdrunError(f"{bad[0][0]}: not a readable image ({bad[0][1]}){more}; replace or remove it")
    return images


def predict(
    run: Path,
    source: Path,
    out: Path | None = None,
    threshold: float | None = None,
    batch_size: int | None = None,
    masks: bool = False,
) -> Predictions:
    """Score an image or a folder; write ``scores.csv``, an overlay per image and, with ``masks``, a mask per image.

    Outputs mirror the input's folders: ``<out>/<relative folder>/<stem>_anomaly.png``
    (and ``_mask.png``). An image is anomalous when its score is above ``threshold``
    (default: the cell's own, on the scale of the scores); masks use the same threshold
    on the anomaly map.
    """
    from torch.utils.data import DataLoader

    run, source = Path(run), Path(source)
    predict_inputs(source)
    record, cell, ckpt = load_run(run)
    out = Path(out) if out is not None else run / "predictions"
    out.mkdir(parents=True, exist_ok=True)
    with cell_log(out):
        from anomalib.data import PredictDataset

        from adrun import registry

        model = registry.build_model(cell, exp_dir_of(run))
        engine = registry.build_engine(cell, out / "anomalib")
        dataset = PredictDataset(source)
        loader = DataLoader(
            dataset, batch_size=batch_size or cell.eval_batch_size, shuffle=False, collate_fn=dataset.collate_fn
        )
        batches: Any = engine.predict(model=model, dataloaders=loader, ckpt_path=ckpt, return_predictions=True)
    from adrun.samples import thresholds

    _, own_image, own_pixel = thresholds(model)
    source_name = "--threshold" if threshold is not None else "the cell's own threshold"
    image_t = threshold if threshold is not None else own_image
    pixel_t = threshold if threshold is not None else own_pixel
    rows = []
    for batch in batches or []:
        for i, path in enumerate(batch.image_path):
            score = float(batch.pred_score[i])
            # Mirror the input's folders: test/good/000.png and test/hole/000.png must not
            # share one 000_anomaly.png (nor point two rows of scores.csv at it).
            image = Path(path)
            rel = image.relative_to(source) if source.is_dir() and image.is_relative_to(source) else Path(image.name)
            overlay = out / rel.parent / f"{rel.stem}_anomaly.png"
            overlay.parent.mkdir(parents=True, exist_ok=True)
            write_overlay(image, batch.anomaly_map[i], overlay)
            row = {
                "path": str(path),
                "image_score": score,
                "pred_label": None if image_t is None else score > image_t,
                "overlay": overlay.relative_to(out).as_posix(),
            }
            if masks:
                mask = out / rel.parent / f"{rel.stem}_mask.png"
                amap = batch.anomaly_map[i].detach().float().cpu()
                # Without any threshold there is no mask to draw: an all-black one would claim "normal".
                if pixel_t is not None:
                    write_mask(image, amap > pixel_t, mask)
                row["mask"] = mask.relative_to(out).as_posix() if pixel_t is not None else ""
            rows.append(row)
    import pandas as pd

    from adrun.records import atomic_write_text

    atomic_write_text(out / "scores.csv", pd.DataFrame(rows).to_csv(index=False))
    anomalous = None if image_t is None else sum(bool(r["pred_label"]) for r in rows)
    return Predictions(out, len(rows), anomalous, image_t, source_name, masks and pixel_t is not None)


def write_mask(image_path: Path, mask, target: Path) -> None:
    """A predicted mask as a black-and-white PNG at the image's own size."""
    import numpy as np
    from PIL import Image

    with Image.open(image_path) as image:
        size = image.size
    array = (np.asarray(mask.numpy(), dtype=bool).squeeze() * 255).astype("uint8")
    picture = Image.fromarray(array).resize(size, Image.Resampling.NEAREST)
    atomic_write(target, lambda tmp: picture.save(tmp, format="PNG"))


def write_overlay(image_path: Path, anomaly_map, target: Path) -> None:
    """The anomaly map (jet, alpha 0.5) over the original image, at the image's own size."""
    import numpy as np
    from matplotlib import colormaps
    from PIL import Image

    image = Image.open(image_path).convert("RGB")
    amap = anomaly_map.detach().float().cpu().numpy().squeeze()
    lo, hi = float(amap.min()), float(amap.max())
    norm = (amap - lo) / (hi - lo) if hi > lo else np.zeros_like(amap)
    heat = Image.fromarray((colormaps["jet"](norm)[..., :3] * 255).astype("uint8")).resize(image.size)
    blended = Image.blend(image, heat, alpha=0.5)
    atomic_write(target, lambda tmp: blended.save(tmp, format="PNG"))
