"""Run one cell: build, fit, test, collect anomalib's metrics -> a record.

``run_cell`` is a plain function returning the record, so tests call it directly;
the CLI and the sweep are its users. Also: re-test and predict from a run folder.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adrun.config import Cell
from adrun.errors import AdrunError, DiskFullError, RunError
from adrun.preflight import IMAGE_SUFFIXES, sources
from adrun.records import atomic_write, now, read_record, versions, write_record

CHECKPOINT = "model.ckpt"
LOG = "log.txt"
METRICS = ("image_AUROC", "image_F1Score", "pixel_AUROC", "pixel_F1Score")
# Loggers whose INFO chatter ("GPU available", tips, hub retries) belongs in log.txt, not the terminal.
NOISY = (
    "lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric",
    "lightning_utilities", "torchmetrics", "huggingface_hub", "anomalib", "timm", "py.warnings", "adrun",
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
        "model": cell.model.name,
        "category": cell.category,
        "index": cell.index,
        "category_index": cell.category_index,
        "key": cell.key,
        "seed": cell.seed,
        "smoke": cell.smoke,
        "data_root": str(root),
        "config": cell.model_dump(mode="json"),
        "weights": sources(cell.model),
        "versions": versions(),
        "metrics": {},
        "seconds": {},
        "checkpoint": None,
        "error": None,
        "started_at": now(),
        "finished_at": None,
    }


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _metrics(results: list[dict]) -> dict[str, float]:
    merged: dict[str, float] = {}
    for result in results or []:
        merged.update({k: float(v) for k, v in result.items() if k in METRICS})
    return merged


def _build(cell: Cell, root: Path, exp_dir: Path, folder: Path):
    from adrun import registry

    datamodule = registry.build_datamodule(cell, root)
    model = registry.build_model(cell, exp_dir)
    engine = registry.build_engine(cell, folder / "anomalib")
    return datamodule, model, engine


def run_cell(
    cell: Cell, root: Path, exp_dir: Path, sink: Callable[[Path, dict[str, Any]], None] = write_record
) -> dict[str, Any]:
    """Fit and test one cell; write and return its record. Failures are recorded, then re-raised.

    ``sink(folder, record)`` receives the record when the cell starts and when it ends. By
    default it writes ``record.json``; a Ray task passes one that keeps the record in memory,
    because there only the driver writes records.
    """
    folder = Path(exp_dir) / "runs" / cell.label / cell.category
    record = base_record(cell, root)
    sink(folder, record)
    # Everything after the "running" record sits inside the try, so a Ctrl-C at any
    # point (even while anomalib is still importing) ends as an "interrupted" record.
    try:
        with cell_log(folder):
            from lightning.pytorch import seed_everything

            seed_everything(cell.seed, workers=True, verbose=False)
            datamodule, model, engine = _build(cell, root, exp_dir, folder)
            start = time.perf_counter()
            engine.fit(model=model, datamodule=datamodule)
            fit_s = time.perf_counter() - start
            atomic_write(folder / CHECKPOINT, lambda tmp: engine.trainer.save_checkpoint(tmp))
            start = time.perf_counter()
            results = engine.test(model=model, datamodule=datamodule, verbose=False)
            test_s = time.perf_counter() - start
            grid = sample_grid(engine, model, datamodule, cell, folder)
        record.update(
            status="success",
            metrics=_metrics(results),
            seconds={"fit": round(fit_s, 3), "test": round(test_s, 3), "total": round(fit_s + test_s, 3)},
            checkpoint=CHECKPOINT,
        )
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


def sample_grid(engine, model, datamodule, cell: Cell, folder: Path) -> dict[str, Any]:
    """Write ``samples.png`` for a tested cell; returns what ``note_samples`` puts in the record.

    A grid that cannot be drawn is logged and noted, never a reason to lose the fit.
    """
    from adrun.samples import SAMPLES, write_samples

    start = time.perf_counter()
    try:
        write_samples(engine, model, datamodule, cell, folder / SAMPLES)
    except Exception as exc:
        # Through logging, not _log_traceback: cell_log's handler still holds log.txt open.
        logging.getLogger("adrun").exception("sample grid failed")
        return {"samples": None, "samples_error": one_line(exc), "seconds": None}
    return {"samples": SAMPLES, "samples_error": None, "seconds": round(time.perf_counter() - start, 3)}


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


def _load(run: Path) -> tuple[dict[str, Any], Cell, Path]:
    record = read_record(run)
    ckpt = run / (record.get("checkpoint") or CHECKPOINT)
    if record.get("status") != "success" or not ckpt.is_file():
        raise RunError(f"{run}: no checkpoint from a successful fit; run `adrun train` or `adrun sweep` first")
    cell = Cell.model_validate(record["config"])
    if cell.model.name == "patchcore":
        # The checkpoint holds the backbone's weights: build it untrained, so test and
        # predict never reach for the hub or for the original weights file.
        cell = cell.model_copy(update={"model": cell.model.model_copy(update={"pre_trained": False, "weights": None})})
    return record, cell, ckpt


def exp_dir_of(run: Path) -> Path:
    # <exp>/runs/<label>/<category>
    return run.parent.parent.parent


def test_run(run: Path) -> dict[str, Any]:
    """Test again from the run's checkpoint and refresh its record."""
    run = Path(run)
    record, cell, ckpt = _load(run)
    root = Path(record["data_root"])
    with cell_log(run):
        datamodule, model, engine = _build(cell, root, exp_dir_of(run), run)
        start = time.perf_counter()
        results = engine.test(model=model, datamodule=datamodule, ckpt_path=ckpt, verbose=False)
        test_s = time.perf_counter() - start
        grid = sample_grid(engine, model, datamodule, cell, run)
    record["metrics"] = _metrics(results)
    record["seconds"]["test"] = round(test_s, 3)
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
    """The images ``predict`` will score, as anomalib's PredictDataset finds them; one line for each bad one."""
    from PIL import Image

    suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
    if not source.exists():
        raise AdrunError(f"{source}: no such image or folder; pass a path to an image or a folder of images")
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise AdrunError(f"{source}: no images here ({suffixes}); pass a folder that holds images")
    elif source.suffix.lower() not in IMAGE_SUFFIXES:
        raise AdrunError(f"{source}: not an image file ({suffixes}); pass an image or a folder of images")
    else:
        files = [source]
    for path in files:
        if path.stat().st_size == 0:
            raise AdrunError(f"{path}: empty file (0 bytes); replace it with the image or remove it")
        try:
            with Image.open(path) as image:
                image.verify()  # the whole file is read and checked, nothing decoded into memory
        except Exception as exc:
            raise AdrunError(f"{path}: not a readable image ({one_line(exc)}); replace it or remove it") from None
    return files


def _relative(path: Path, source: Path) -> Path:
    """``path`` relative to the input folder, so test/good/000.png and test/hole/000.png stay apart."""
    base = source.resolve() if source.is_dir() else source.resolve().parent
    try:
        return Path(path).resolve().relative_to(base)
    except ValueError:
        return Path(Path(path).name)


def predict(run: Path, source: Path, out: Path | None = None, threshold: float | None = None,
            batch_size: int | None = None, masks: bool = False) -> Predictions:
    """Score an image or a folder; write ``scores.csv``, an overlay per image and, with ``masks``, a mask per image.

    Outputs mirror the input's folders: ``<out>/<relative folder>/<stem>_anomaly.png``
    (and ``_mask.png``). An image is anomalous when its score is above ``threshold``
    (default: the cell's own, on the scale of the scores); masks use the same threshold
    on the anomaly map.
    """
    from torch.utils.data import DataLoader

    run, source = Path(run), Path(source)
    predict_inputs(source)
    record, cell, ckpt = _load(run)
    out = Path(out) if out is not None else run / "predictions"
    out.mkdir(parents=True, exist_ok=True)
    with cell_log(out):
        from anomalib.data import PredictDataset

        from adrun import registry

        model = registry.build_model(cell, exp_dir_of(run))
        engine = registry.build_engine(cell, out / "anomalib")
        dataset = PredictDataset(source)
        loader = DataLoader(dataset, batch_size=batch_size or cell.eval_batch_size, shuffle=False,
                            collate_fn=dataset.collate_fn)
        batches = engine.predict(model=model, dataloaders=loader, ckpt_path=ckpt, return_predictions=True)
    from adrun.samples import thresholds

    _, own_image, own_pixel = thresholds(model)
    source_name = "--threshold" if threshold is not None else "the cell's own threshold"
    image_t = threshold if threshold is not None else own_image
    pixel_t = threshold if threshold is not None else own_pixel
    rows = []
    for batch in batches or []:
        for i, path in enumerate(batch.image_path):
            score = float(batch.pred_score[i])
            rel = _relative(Path(path), source)
            overlay = rel.parent / f"{rel.stem}_anomaly.png"
            write_overlay(Path(path), batch.anomaly_map[i], out / overlay)
            row = {"path": str(path), "image_score": score,
                   "pred_label": None if image_t is None else score > image_t, "overlay": str(overlay)}
            if masks:
                mask = rel.parent / f"{rel.stem}_mask.png"
                amap = batch.anomaly_map[i].detach().float().cpu()
                # Without any threshold there is no mask to draw: an all-black one would claim "normal".
                if pixel_t is not None:
                    write_mask(Path(path), amap > pixel_t, out / mask)
                row["mask"] = str(mask) if pixel_t is not None else ""
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
