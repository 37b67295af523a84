"""Figures from tables: the categories x models heatmap (``pixel_auroc.png``).

matplotlib runs headless (Agg) and is imported inside the functions, so importing
adrun stays light. Every figure is written atomically, like every other file.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from adrun.records import atomic_write

# AUROC 0.5 is chance and 1.0 perfect: a fixed scale keeps heatmaps of different
# experiments comparable at a glance (a per-figure scale would stretch 0.97-0.99).
VMIN, VMAX = 0.5, 1.0


def pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    # Labels are users' folder names and config values: a `$` must print as a dollar, not
    # start mathtext (an odd number of them is a parse error), and `\` is no TeX command.
    matplotlib.rcParams["text.parse_math"] = False
    matplotlib.rcParams["text.usetex"] = False
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: Path, dpi: int = 120) -> None:
    """Render ``fig`` to PNG in memory, then write it atomically; closes the figure."""
    plt = pyplot()
    from PIL import Image

    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    finally:
        plt.close(fig)
    # RGB without alpha: the grids are inlined into report.html, so bytes count. Not
    # optimize=True: on a sample grid it cost 0.3 s of CPU per figure for 1% fewer bytes.
    image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    atomic_write(Path(path), lambda tmp: image.save(tmp, format="PNG"))


# A column is 1.5 in wide; at 10 pt about this many characters fit under it.
LABEL_CHARS = 16


def short_labels(labels: list[str], width: int = LABEL_CHARS) -> tuple[list[str], list[str]]:
    """Column names that fit their column, and the legend lines for those that had to be shortened.

    A label too long for its column (grid labels: ``<model>[coreset_sampling_ratio=0.05]``)
    becomes its model part and a number, ``<model> #1``, and the legend names it in full.
    """
    shorts: list[str] = []
    legend: list[str] = []
    counts: dict[str, int] = {}
    for label in labels:
        if len(label) <= width:
            shorts.append(label)
            continue
        base = label.split("[")[0]
        if not base or len(base) > width - 3:
            base = label[: width - 4] + "…"
        counts[base] = counts.get(base, 0) + 1
        short = f"{base} #{counts[base]}"
        shorts.append(short)
        legend.append(f"{short}: {label}")
    return shorts, legend


def heatmap(table, path: Path, title: str) -> list[str]:
    """Categories x models with the values printed in the cells; the mean row set apart below a gap.

    ``table`` is a ``tables.MetricTable`` (cells read "0.961 ± 0.004" where there are seeds
    to spread over, the colour is the mean) or a plain wide DataFrame of numbers.
    Returns the texts printed in the cells, row by row.
    """
    import numpy as np

    plt = pyplot()
    means = table if isinstance(table, pd.DataFrame) else table.mean
    spread = not isinstance(table, pd.DataFrame) and table.spread

    def text(category, column, value) -> str:
        if np.isnan(value):
            return "–"
        if isinstance(table, pd.DataFrame):
            return f"{value:.3f}"
        return table.text(category, column, show_n=False).replace(" ± ", "\n± ")

    body = means.drop(index="mean", errors="ignore")
    mean = means.loc[["mean"]] if "mean" in means.index else None
    n_rows, n_cols = len(body), max(len(means.columns), 1)
    width = 1.8 + 1.5 * n_cols
    row_height = 0.75 if spread else 0.5
    height = 1.2 + row_height * (n_rows + (1 if mean is not None else 0))
    ratios = [max(n_rows, 1)] + ([1] if mean is not None else [])
    fig, axes = plt.subplots(
        len(ratios),
        1,
        figsize=(width, height),
        squeeze=False,
        gridspec_kw={"height_ratios": ratios, "hspace": 0.08 if mean is None else 0.25},
    )
    cmap = plt.get_cmap("viridis").with_extremes(bad="#dddddd")
    image = None
    printed = []
    for ax, part, bold in zip(axes[:, 0], [body, mean], [False, True], strict=False):
        if part is None:
            continue
        values = part.to_numpy(dtype=float) if len(part.columns) else np.full((len(part), 1), np.nan)
        image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=VMIN, vmax=VMAX, aspect="auto")
        for (i, j), value in np.ndenumerate(values):
            shown = text(part.index[i], part.columns[j], value) if len(part.columns) else "–"
            printed.append(shown)
            # Dark text on the bright (yellow) end of viridis, white elsewhere.
            light = not np.isnan(value) and value > VMIN + 0.7 * (VMAX - VMIN)
            ax.text(
                j,
                i,
                shown,
                ha="center",
                va="center",
                fontsize=9 if spread else 10,
                color="black" if light or np.isnan(value) else "white",
                fontweight="bold" if bold else "normal",
            )
        ax.set_yticks(range(len(part)), [str(i) for i in part.index], fontweight="bold" if bold else "normal")
        ax.set_xticks(range(len(part.columns)), [])
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
    if spread:
        title += f"\nmean ± std over seeds {', '.join(map(str, table.seeds))}"
    axes[0, 0].set_title(title, fontsize=11)
    # Model names on top of the first panel, where the eye starts.
    axes[0, 0].xaxis.tick_top()
    shorts, legend = short_labels([str(c) for c in means.columns])
    axes[0, 0].set_xticks(range(len(means.columns)), shorts, rotation=0)
    if legend:
        # Below the figure (bbox_inches="tight" takes it in); taken literally, never as mathtext.
        fig.text(0.02, 0.0, "\n".join(legend), ha="left", va="top", fontsize=8, parse_math=False)
    if image is not None:
        bar = fig.colorbar(image, ax=axes[:, 0].tolist(), fraction=0.05, pad=0.03)
        bar.ax.tick_params(labelsize=8)
    save_png(fig, path)
    return printed
