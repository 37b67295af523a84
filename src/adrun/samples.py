"""The sample grid of a tested cell: ``samples.png``.

A fixed, deterministic set of test images (the first ``N_GOOD`` good ones and the first
``N_PER_DEFECT`` of every defect type, by path) is run through the trained model with
``engine.predict``: a few images, so it costs a second or two. For each image the grid
shows the image, its ground-truth outline, the anomaly map and the predicted mask,
titled with the image score. The same images every time, so grids of different models
and runs of one category can be set side by side.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd

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


def predict_samples(engine, model, datamodule, cell) -> list[dict]:
    """Predict the picked test images with the trained model; one dict per image (numpy arrays)."""
    from torch.utils.data import DataLoader

    picked = pick(datamodule.test_data.samples)
    dataset = copy.copy(datamodule.test_data)  # shallow: only the samples table differs
    dataset.samples = picked
    # Masks from the samples table: good images have none (the batch would hold placeholders).
    masks = {
        str(row.image_path): str(row.mask_path) if row.label_index != 0 and isinstance(row.mask_path, str)
        and row.mask_path else None
        for row in picked.itertuples()
    }
    loader = DataLoader(dataset, batch_size=cell.eval_batch_size, shuffle=False, collate_fn=dataset.collate_fn)
    batches = engine.predict(model=model, dataloaders=loader, return_predictions=True) or []
    items = []
    for batch in batches:
        for i, path in enumerate(batch.image_path):
            items.append({
                "image_path": str(path),
                "mask_path": masks.get(str(path)),
                "kind": Path(path).parent.name,
                "score": float(batch.pred_score[i]),
                "anomalous": bool(batch.pred_label[i]) if batch.pred_label is not None else None,
                "anomaly_map": batch.anomaly_map[i].detach().float().cpu().numpy().squeeze(),
                "pred_mask": None if batch.pred_mask is None
                else batch.pred_mask[i].detach().float().cpu().numpy().squeeze(),
            })
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


def render(items: list[dict], target: Path, title: str = "", fraction: float = 1.0) -> None:
    """One column per image; rows: image, ground-truth outline, anomaly map (0-1), predicted mask."""
    import numpy as np

    from adrun.plots import pyplot, save_png

    plt = pyplot()
    n = max(len(items), 1)
    fig, axes = plt.subplots(len(ROWS), n, figsize=(1.9 * n + 0.6, 1.9 * len(ROWS) + 0.7), squeeze=False)
    for j, item in enumerate(items):
        amap = item["anomaly_map"]
        shape = amap.shape[-2:]
        image = _load(item["image_path"], shape, fraction, "RGB")
        truth = _load(item["mask_path"], shape, fraction, "L")
        pred = item["pred_mask"] if item["pred_mask"] is not None else amap >= 0.5
        column = axes[:, j]
        column[0].imshow(image)
        column[1].imshow(image)
        if truth.any():
            column[1].contour(truth, levels=[0.5], colors=["#00ff66"], linewidths=1.2)
        # Post-processed maps are normalised to 0-1 with the threshold at 0.5.
        column[2].imshow(image.mean(axis=2), cmap="gray")
        column[2].imshow(amap, cmap="jet", vmin=0.0, vmax=1.0, alpha=0.55)
        column[3].imshow(np.asarray(pred, dtype=float), cmap="gray", vmin=0, vmax=1)
        if truth.any():
            column[3].contour(truth, levels=[0.5], colors=["#00ff66"], linewidths=1.0)
        verdict = "" if item["anomalous"] is None else (" (anomalous)" if item["anomalous"] else " (normal)")
        column[0].set_title(f"{item['kind']}/{Path(item['image_path']).stem}\nscore {item['score']:.2f}{verdict}",
                            fontsize=8, color="#b00020" if item["anomalous"] else "black")
    for i, name in enumerate(ROWS):
        axes[i, 0].set_ylabel(name, fontsize=9)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if not items:
        axes[0, 0].text(0.5, 0.5, "no test images", ha="center", va="center")
    if title:
        fig.suptitle(title, fontsize=10)
    save_png(fig, target, dpi=100)


def write_samples(engine, model, datamodule, cell, target: Path) -> Path:
    """Predict the fixed sample set and write the grid to ``target``."""
    items = predict_samples(engine, model, datamodule, cell)
    title = (f"{cell.label} / {cell.category}: green outline = ground truth; "
             "anomaly map from 0 (blue) to 1 (red), threshold 0.5")
    render(items, Path(target), title=title, fraction=crop_fraction(cell))
    return Path(target)
