"""The sample grid of a tested cell: ``samples.png``.

A fixed, deterministic set of test images (the first ``N_GOOD`` good ones and the first
``N_PER_DEFECT`` of every defect type, by path) is shown as ``engine.test`` scored it:
``SampleCapture`` keeps those images' scores and maps from the test batches, so the grid
costs no second pass through the model (``engine.predict`` is the fallback when nothing
was captured). For each image the grid
shows the image, its ground-truth outline, the anomaly map and the predicted mask,
titled with the image score. The map's colours are in its real units (anomalib's
normalised 0-1 after a validated fit, raw otherwise), with the threshold marked. The
same images every time, so grids of different models and runs of one category can be
set side by side.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pandas as pd

from adrun.per_image import AfterPostProcessing

SAMPLES = "samples.png"
N_GOOD = 2
N_PER_DEFECT = 1
ROWS = ("image", "ground truth", "anomaly map", "predicted mask")


def pick(samples: pd.DataFrame, n_good: int = N_GOOD, n_per_defect: int = N_PER_DEFECT) -> pd.DataFrame:
    """The first good images, then the first of each defect type (sorted by name), by path."""
    frame = samples.sort_values("image_path").reset_index(drop=True)
    kind = frame.image_path.map(lambda p: Path(p).parent.name)
    good = frame[frame.label_index == 0].head(n_good)
    bad = frame[frame.label_index != 0]
    defects = bad.groupby(kind[bad.index], sort=True, group_keys=False).head(n_per_defect)
    defects = defects.assign(_kind=kind[defects.index]).sort_values(["_kind", "image_path"]).drop(columns="_kind")
    return pd.concat([good, defects]).reset_index(drop=True)


def crop_fraction(cell) -> float:
    """Share of the image side the model sees: anomalib resizes, then center-crops (a ``center_crop`` key)."""
    from adrun.models import spec_of

    crop = getattr(cell.model, "center_crop", None)
    size = cell.model.image_size or spec_of(cell.model).image_size
    return min(crop / size, 1.0) if crop else 1.0


def thresholds(model) -> tuple[bool, float | None, float | None]:
    """(normalised?, image threshold, pixel threshold) as anomalib applies them to what it returns.

    After a fit that validated, scores and maps are on anomalib's normalised 0-1 scale and
    both thresholds are 0.5 there. A fit stopped before its first validation (a few
    training steps) leaves them raw, with thresholds that may be missing (None): then
    anomalib's "labels" are the raw scores themselves, not verdicts.
    """
    import math

    post = getattr(model, "post_processor", None)
    if post is None or not getattr(post, "enable_thresholding", False):
        return False, None, None
    if post.enable_normalization and not math.isnan(float(post.image_min)):
        return True, float(post.normalized_image_threshold), float(post.normalized_pixel_threshold)
    image, pixel = float(post.image_threshold), float(post.pixel_threshold)
    return False, (None if math.isnan(image) else image), (None if math.isnan(pixel) else pixel)


class SampleCapture(AfterPostProcessing):
    """Keeps the picked images' scores and anomaly maps from ``engine.test``'s own batches.

    Read after anomalib's post-processor is done with the batch
    (``per_image.AfterPostProcessing``, as ``TestScores``): the maps are the tested,
    normalised ones. Only the few
    picked images are kept.
    """

    def __init__(self) -> None:
        self.outputs: dict[str, tuple[float, Any]] = {}
        self._wanted: set[str] = set()

    def start(self, trainer) -> None:
        self.outputs = {}
        samples = getattr(getattr(trainer.datamodule, "test_data", None), "samples", None)
        self._wanted = set(map(str, pick(samples).image_path)) if samples is not None else set()

    def read(self, batch) -> None:
        if batch.image_path is None or batch.pred_score is None:
            return
        for i, path in enumerate(batch.image_path):
            if str(path) in self._wanted:
                amap = None if batch.anomaly_map is None else batch.anomaly_map[i].detach().float().cpu().numpy()
                self.outputs[str(path)] = (float(batch.pred_score[i]), amap)

    def covers(self, picked: pd.DataFrame) -> bool:
        return bool(len(picked)) and all(str(p) in self.outputs for p in picked.image_path)


def predict_samples(engine, model, datamodule, cell, captured: SampleCapture | None = None) -> list[dict]:
    """The picked test images as the trained model scores them; one dict per image (numpy arrays).

    From ``captured`` (the test batches) when it holds every picked image, else by
    ``engine.predict`` on them.
    """
    from torch.utils.data import DataLoader

    picked = pick(datamodule.test_data.samples)
    # Masks from the samples table: good images have none (the batch would hold placeholders).
    masks = {
        str(row.image_path): str(row.mask_path)
        if row.label_index != 0 and isinstance(row.mask_path, str) and row.mask_path
        else None
        for row in picked.itertuples()
    }
    if captured is not None and captured.covers(picked):
        outputs = [(path, *captured.outputs[path]) for path in map(str, picked.image_path)]
    else:
        dataset = copy.copy(datamodule.test_data)  # shallow: only the samples table differs
        dataset.samples = picked
        loader = DataLoader(dataset, batch_size=cell.eval_batch_size, shuffle=False, collate_fn=dataset.collate_fn)
        batches = engine.predict(model=model, dataloaders=loader, return_predictions=True) or []
        outputs = [
            (
                str(path),
                float(batch.pred_score[i]),
                None if batch.anomaly_map is None else batch.anomaly_map[i].detach().float().cpu().numpy(),
            )
            for batch in batches
            for i, path in enumerate(batch.image_path)
        ]
    _, image_t, pixel_t = thresholds(model)
    items = []
    for path, score, raw_map in outputs:
        if raw_map is None:
            raise ValueError(f"{cell.label} gives image scores only, no anomaly map to draw")
        amap = raw_map.squeeze()
        items.append(
            {
                "image_path": path,
                "mask_path": masks.get(path),
                "kind": Path(path).parent.name,
                "score": score,
                # anomalib's own rule (score > threshold); no threshold, no verdict.
                "anomalous": None if image_t is None else score > image_t,
                "anomaly_map": amap,
                "pred_mask": None if pixel_t is None else amap > pixel_t,
            }
        )
    # The dataset sorts its samples by path; show them in picking order (good first).
    order = {path: i for i, path in enumerate(map(str, picked.image_path))}
    return sorted(items, key=lambda item: order.get(item["image_path"], len(order)))


def _load(path: str | None, shape: tuple[int, int], fraction: float, mode: str):
    """An image (RGB floats) or mask (bool) from disk, cropped and resized like the model's input."""
    import numpy as np
    from PIL import Image

    if path is None:
        return np.zeros(shape, dtype=bool)
    image = Image.open(path).convert(mode)
    if fraction < 1.0:
        w, h = image.size
        cw, ch = round(w * fraction), round(h * fraction)
        left, top = (w - cw) // 2, (h - ch) // 2
        image = image.crop((left, top, left + cw, top + ch))
    resample = Image.Resampling.BILINEAR if mode == "RGB" else Image.Resampling.NEAREST
    array = np.asarray(image.resize((shape[1], shape[0]), resample))
    return array / 255.0 if mode == "RGB" else array > 127


def map_scale(items: list[dict], normalized: bool) -> tuple[float, float]:
    """The colour range of the anomaly maps: anomalib's 0-1 when normalised, else the maps' own range."""
    if normalized or not items:
        return 0.0, 1.0
    lo = min(float(item["anomaly_map"].min()) for item in items)
    hi = max(float(item["anomaly_map"].max()) for item in items)
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def render(
    items: list[dict],
    target: Path,
    title: str = "",
    fraction: float = 1.0,
    scale: tuple[float, float] = (0.0, 1.0),
    pixel_threshold: float | None = 0.5,
    note: str = "",
) -> None:
    """One column per image; rows: image, ground-truth outline, anomaly map on ``scale``, predicted mask.

    The anomaly-map row has a colour bar in the maps' real units with the pixel threshold
    marked; ``note`` (e.g. a random teacher) is printed in red under the title.
    """
    import numpy as np

    from adrun.plots import pyplot, save_png

    plt = pyplot()
    n = max(len(items), 1)
    fig, axes = plt.subplots(len(ROWS), n, figsize=(1.9 * n + 1.2, 1.9 * len(ROWS) + 0.9), squeeze=False)
    lo, hi = scale
    heat = None
    for j, item in enumerate(items):
        amap = item["anomaly_map"]
        shape = amap.shape[-2:]
        image = _load(item["image_path"], shape, fraction, "RGB")
        truth = _load(item["mask_path"], shape, fraction, "L")
        column = axes[:, j]
        column[0].imshow(image)
        column[1].imshow(image)
        if truth.any():
            column[1].contour(truth, levels=[0.5], colors=["#00ff66"], linewidths=1.2)
        column[2].imshow(image.mean(axis=2), cmap="gray")
        heat = column[2].imshow(amap, cmap="jet", vmin=lo, vmax=hi, alpha=0.55)
        if item["pred_mask"] is not None:
            column[3].imshow(np.asarray(item["pred_mask"], dtype=float), cmap="gray", vmin=0, vmax=1)
        else:
            column[3].set_facecolor("#eeeeee")
            column[3].text(
                0.5, 0.5, "no threshold", ha="center", va="center", fontsize=8, transform=column[3].transAxes
            )
        if truth.any():
            column[3].contour(truth, levels=[0.5], colors=["#00ff66"], linewidths=1.0)
        verdict = "" if item["anomalous"] is None else (" (anomalous)" if item["anomalous"] else " (normal)")
        column[0].set_title(
            f"{item['kind']}/{Path(item['image_path']).stem}\nscore {item['score']:.2f}{verdict}",
            fontsize=8,
            color="#b00020" if item["anomalous"] else "black",
        )
    for i, name in enumerate(ROWS):
        axes[i, 0].set_ylabel(name, fontsize=9)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if not items:
        axes[0, 0].text(0.5, 0.5, "no test images", ha="center", va="center")
    if heat is not None:
        # Beside the map row, outside the grid, so every column keeps its width.
        fig.subplots_adjust(right=0.92)
        row = axes[2, -1].get_position()
        bar = fig.colorbar(heat, cax=fig.add_axes((row.x1 + 0.012, row.y0, 0.012, row.height)))
        bar.ax.tick_params(labelsize=7)
        # The bar's ticks are the scale's ends and the threshold: the numbers the title quotes.
        ticks, labels = [lo, hi], [f"{lo:.3g}", f"{hi:.3g}"]
        if pixel_threshold is not None and lo <= pixel_threshold <= hi:
            ticks.insert(1, pixel_threshold)
            labels.insert(1, f"{pixel_threshold:.3g} threshold")
            bar.ax.axhline(pixel_threshold, color="black", linewidth=1.5)
        bar.set_ticks(ticks, labels=labels)
    if title:
        fig.suptitle(title, fontsize=10)
    if note:
        bottom = axes[-1, 0].get_position().y0
        fig.text(0.5, bottom - 0.015, note, ha="center", va="top", fontsize=9, color="#b00020", fontweight="bold")
    save_png(fig, target, dpi=100)


def describe(cell, normalized: bool, scale: tuple[float, float], pixel_threshold: float | None) -> tuple[str, str]:
    """The grid's title (what the colours and the mask mean) and its warning note, if any."""
    if normalized:
        how = f"anomaly map on anomalib's normalised scale, 0 (blue) to 1 (red); mask: map > {pixel_threshold:g}"
    else:
        lo, hi = scale
        how = f"anomaly map in raw units, {lo:.3g} (blue) to {hi:.3g} (red); "
        how += (
            f"mask: map > {pixel_threshold:.3g} (the cell's threshold)"
            if pixel_threshold is not None
            else "no threshold (the fit stopped before validating), so no mask or verdict"
        )
    title = f"{cell.label} / {cell.category}: green outline = ground truth\n{how}"
    from adrun.models import spec_of

    # The model's own warnings, e.g. a random teacher: then the maps show the wiring only.
    note = " ".join(f"{cell.label} {n}" for n in spec_of(cell.model).notes(cell.model))
    return title, note


def write_samples(engine, model, datamodule, cell, target: Path, captured: SampleCapture | None = None) -> Path:
    """Write the grid of the fixed sample set to ``target``, from ``captured`` test batches where it can."""
    items = predict_samples(engine, model, datamodule, cell, captured)
    normalized, _, pixel_t = thresholds(model)
    scale = map_scale(items, normalized)
    title, note = describe(cell, normalized, scale, pixel_t)
    render(
        items, Path(target), title=title, fraction=crop_fraction(cell), scale=scale, pixel_threshold=pixel_t, note=note
    )
    return Path(target)
