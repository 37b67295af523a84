"""Two experiments cell by cell: did my change help? (``adrun table A --against B``).

Per model label, category and metric: A's mean over its seeds, B's, and Δ = A − B, with
a 95% percentile bootstrap interval and a verdict (``better``: the whole interval above
0, ``worse``: below, else ``no clear change``). Every metric value is anomalib's own:
the point estimates are the recorded ones, and a resampled value is computed by
anomalib's metric classes from the per-image ``test_scores.csv`` each cell keeps.

- **Image metrics** (image AUROC, F1Max, AUPR, F1Score) resample the seeds of each side
  and the test images, paired (the same images for A and B) and stratified by label (the
  number of good and defect images stays fixed, so AUROC stays defined).
- **Pixel metrics** resample the seeds only: adrun keeps no anomaly maps per image, so
  the interval leaves out the test images' share of the noise and is too narrow by that.
  With one seed on each side there is no interval at all; the output says so.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd

from adrun.errors import CompareError
from adrun.records import atomic_write_text

RESAMPLES = 1000
LEVEL = 0.95
COLUMNS = [
    "metric",
    "model",
    "category",
    "a",
    "a_n",
    "b",
    "b_n",
    "delta",
    "low",
    "high",
    "verdict",
    "resampled",
    "note",
]
# Image metrics recomputable from test_scores.csv: anomalib class and the fields it reads.
IMAGE_METRICS: dict[str, tuple[str, tuple[str, ...], dict[str, Any]]] = {
    "image_AUROC": ("AUROC", ("pred_score", "gt_label"), {}),
    "image_F1Max": ("F1Max", ("pred_score", "gt_label"), {}),
    "image_AUPR": ("AUPR", ("pred_score", "gt_label"), {}),
    "image_F1Score": ("F1Score", ("pred_label", "gt_label"), {}),
}


@dataclass
class Side:
    """One experiment: its folder, a display name, and the records its plan shows."""

    exp_dir: Path
    name: str
    records: list[dict]

    def cell(self, label: str, category: str) -> list[dict]:
        return [
            r
            for r in self.records
            if r.get("status") == "success" and r["label"] == label and r["category"] == category
        ]


def load_side(exp_dir: Path, name: str) -> Side:
    from adrun.tables import select

    exp_dir = Path(exp_dir)
    if not (exp_dir / "runs").is_dir():
        raise CompareError(f"--against {exp_dir}: no runs/ folder; pass another experiment folder, e.g. results/demo")
    return Side(exp_dir, name, select(exp_dir).records)


def names(a_dir: Path, b_dir: Path) -> tuple[str, str]:
    a, b = Path(a_dir), Path(b_dir)
    if a.resolve() == b.resolve():
        raise CompareError(f"--against {b}: the same experiment as {a}; pass the experiment to compare with")
    if a.name != b.name:
        return a.name, b.name
    return str(a), str(b)


def _pairs(a: Side, b: Side) -> list[tuple[str, str]]:
    """(A's label, B's label) per result column: the same label, or the only one of each side."""
    la = list(dict.fromkeys(r["label"] for r in a.records))
    lb = list(dict.fromkeys(r["label"] for r in b.records))
    common = [label for label in la if label in lb]
    if common:
        return [(label, label) for label in common]
    if len(la) == 1 and len(lb) == 1:
        return [(la[0], lb[0])]
    return []


def _scores(record: dict, exp_dir: Path) -> pd.DataFrame | None:
    """A cell's per-image scores, read only from inside its own run folder."""
    from adrun import per_image
    from adrun.errors import RunError
    from adrun.records import run_dir

    name = record.get("test_scores")
    if not name or not record.get("folder"):
        return None
    try:
        folder = run_dir(exp_dir, record["folder"]).resolve()
    except RunError:
        return None
    path = (folder / str(name)).resolve()
    if folder not in path.parents or not path.is_file():
        return None
    frame = per_image.read(path)
    return frame.drop_duplicates("image").set_index("image")


class _Metric:
    """An anomalib metric object, reset and recomputed per resample."""

    def __init__(self, metric: str):
        import anomalib.metrics as anomalib_metrics

        cls_name, self.fields, kwargs = IMAGE_METRICS[metric]
        self.metric = getattr(anomalib_metrics, cls_name)(fields=list(self.fields), **kwargs)

    def __call__(self, score, pred_label, label) -> float:
        import torch

        values = {
            "pred_score": torch.tensor(score, dtype=torch.float32),
            "pred_label": torch.tensor(pred_label, dtype=torch.int64),
            "gt_label": torch.tensor(label, dtype=torch.int64),
        }
        self.metric.reset()
        self.metric.update(SimpleNamespace(**{f: values[f] for f in self.fields}))
        return float(self.metric.compute())


def _image_resamples(metric: str, a: list[pd.DataFrame], b: list[pd.DataFrame], resamples: int, rng):
    """Δ per resample (seeds of each side and paired, label-stratified test images), or (None, why)."""
    import numpy as np

    images = sorted(set.intersection(*(set(f.index) for f in a + b)))
    if not images:
        return None, "no test image in common"
    labels = a[0].loc[images, "label"].to_numpy()
    if any((f.loc[images, "label"].to_numpy() != labels).any() for f in a + b):
        return None, "the two sides label the same test images differently"
    if len(set(labels.tolist())) < 2:
        return None, "the common test images are all of one label"
    if metric == "image_F1Score" and any(f["pred_label"].isna().any() for f in a + b):
        return None, "no predicted labels stored"
    score = _Metric(metric)
    sides = [
        [(f.loc[images, "score"].to_numpy(), f.loc[images, "pred_label"].fillna(0).to_numpy()) for f in s]
        for s in (a, b)
    ]
    strata = [np.flatnonzero(labels == value) for value in sorted(set(labels.tolist()))]
    out = np.empty(resamples)
    for r in range(resamples):
        idx = np.concatenate([rng.choice(s, size=len(s), replace=True) for s in strata])
        means = []
        for side in sides:
            drawn = rng.integers(0, len(side), size=len(side))
            values = {i: score(side[i][0][idx], side[i][1][idx], labels[idx]) for i in set(drawn.tolist())}
            means.append(sum(values[i] for i in drawn) / len(drawn))
        out[r] = means[0] - means[1]
    return out, ""


def _seed_resamples(a: list[float], b: list[float], resamples: int, rng):
    import numpy as np

    if len(a) < 2 and len(b) < 2:
        return None, "one seed on each side: no interval (run several seeds)"
    av, bv = np.asarray(a), np.asarray(b)
    draws_a = av[rng.integers(0, len(av), size=(resamples, len(av)))].mean(axis=1)
    draws_b = bv[rng.integers(0, len(bv), size=(resamples, len(bv)))].mean(axis=1)
    return draws_a - draws_b, ""


def _verdict(low: float, high: float) -> str:
    if math.isnan(low):
        return ""
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "no clear change"


def against(a: Side, b: Side, resamples: int = RESAMPLES, seed: int = 0) -> pd.DataFrame:
    """The long table: one row per metric x model x category, then ``mean`` (over the common categories)."""
    import numpy as np

    from adrun.tables import Selection, metrics_of

    if resamples < 100:
        raise CompareError(f"--resamples {resamples}: use at least 100 for a 95% interval")
    pairs = _pairs(a, b)
    if not pairs:
        raise CompareError(
            f"--against: {a.name} and {b.name} share no model label; compare experiments of the same models"
        )
    cats_a = list(dict.fromkeys(r["category"] for r in a.records))
    cats_b = {r["category"] for r in b.records}
    categories = [c for c in cats_a if c in cats_b]
    if not categories:
        raise CompareError(f"--against: {a.name} and {b.name} share no category")
    found_a = {m for r in a.records for m in (r.get("metrics") or {})}
    found_b = {m for r in b.records for m in (r.get("metrics") or {})}
    metrics = [m for m in metrics_of(Selection(a.records)) if m in found_a and m in found_b]
    rng = np.random.default_rng(seed)
    alpha = (1 - LEVEL) / 2
    rows = []
    for metric in metrics:
        for label_a, label_b in pairs:
            model = label_a if label_a == label_b else f"{label_a} vs {label_b}"
            draws_per_category = []
            for category in categories:
                ra, rb = a.cell(label_a, category), b.cell(label_b, category)
                va = [float(r["metrics"][metric]) for r in ra if metric in r.get("metrics", {})]
                vb = [float(r["metrics"][metric]) for r in rb if metric in r.get("metrics", {})]
                row = {
                    "metric": metric,
                    "model": model,
                    "category": category,
                    "a": _mean(va),
                    "a_n": len(va),
                    "b": _mean(vb),
                    "b_n": len(vb),
                    "low": math.nan,
                    "high": math.nan,
                    "resampled": "",
                    "note": "",
                }
                row["delta"] = row["a"] - row["b"]
                draws = None
                if not va or not vb:
                    row["note"] = "no result on " + ("both sides" if not va and not vb else "A" if not va else "B")
                elif metric in IMAGE_METRICS:
                    fa = [_scores(r, a.exp_dir) for r in ra if metric in r.get("metrics", {})]
                    fb = [_scores(r, b.exp_dir) for r in rb if metric in r.get("metrics", {})]
                    if all(f is not None for f in fa + fb):
                        draws, why = _image_resamples(metric, fa, fb, resamples, rng)
                        row["resampled"] = "seeds × test images" if draws is not None else ""
                    else:
                        why = "no per-image scores (cells from before adrun kept them; `adrun test` the cell)"
                    if draws is None:
                        draws, why2 = _seed_resamples(va, vb, resamples, rng)
                        row["note"] = why + ("; seeds only" if draws is not None else f"; {why2}")
                        row["resampled"] = "seeds" if draws is not None else ""
                else:
                    draws, row["note"] = _seed_resamples(va, vb, resamples, rng)
                    row["resampled"] = "seeds" if draws is not None else ""
                    if draws is not None:
                        row["note"] = "no anomaly maps are kept: the interval covers the seeds, not the test images"
                if draws is not None:
                    row["low"], row["high"] = (float(np.quantile(draws, alpha)), float(np.quantile(draws, 1 - alpha)))
                draws_per_category.append(draws)
                row["verdict"] = _verdict(row["low"], row["high"])
                rows.append(row)
            rows.append(_mean_row(metric, model, rows[-len(categories) :], draws_per_category, alpha))
    return pd.DataFrame(rows, columns=COLUMNS)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _mean_row(metric, model, rows, draws, alpha) -> dict:
    import numpy as np

    both = [r for r in rows if r["a_n"] and r["b_n"]]
    row = {
        "metric": metric,
        "model": model,
        "category": "mean",
        "a": _mean([r["a"] for r in both]),
        "a_n": min((r["a_n"] for r in both), default=0),
        "b": _mean([r["b"] for r in both]),
        "b_n": min((r["b_n"] for r in both), default=0),
        "low": math.nan,
        "high": math.nan,
        "resampled": "",
        "note": f"over the {len(both)} categories with both",
    }
    row["delta"] = row["a"] - row["b"]
    if both and len(both) == len(rows) and all(d is not None for d in draws):
        stacked = np.mean(np.stack(draws), axis=0)  # categories resampled independently, averaged per resample
        row["low"], row["high"] = float(np.quantile(stacked, alpha)), float(np.quantile(stacked, 1 - alpha))
        kinds = {r["resampled"] for r in rows}
        row["resampled"] = kinds.pop() if len(kinds) == 1 else "mixed"
    row["verdict"] = _verdict(row["low"], row["high"])
    return row


# --------------------------------------------------------------------------- rendering


def _n(value: float, sign: bool = False) -> str:
    if pd.isna(value):
        return "–"
    return f"{value:+.3f}" if sign else f"{value:.3f}"


def to_markdown(table: pd.DataFrame, a: Side, b: Side, resamples: int) -> str:
    from adrun.tables import markdown_table, md_escape

    lines = [
        f"# Against `{md_escape(b.name)}`: {md_escape(a.name)} − {md_escape(b.name)}, per category",
        "",
        f"A = {md_escape(a.exp_dir)}, B = {md_escape(b.exp_dir)}. Δ = A − B (higher is better for every "
        f"metric here). The interval is a {LEVEL:.0%} percentile bootstrap over {resamples} resamples: "
        "image metrics resample each side's seeds and the test images (paired, stratified by label); "
        "pixel metrics resample the seeds only, because adrun keeps no per-image anomaly maps, so their "
        "interval leaves the test images' noise out. better / worse: the whole interval is above / below 0.",
    ]
    for (metric, model), part in table.groupby(["metric", "model"], sort=False):
        lines += ["", f"## {md_escape(metric)}: {md_escape(model)}", ""]
        rows = []
        for _, r in part.iterrows():
            interval = "–" if pd.isna(r["low"]) else f"[{r['low']:+.3f}, {r['high']:+.3f}]"
            rows.append(
                [
                    str(r["category"]),
                    f"{_n(r['a'])} (n={r['a_n']})",
                    f"{_n(r['b'])} (n={r['b_n']})",
                    _n(r["delta"], sign=True),
                    interval,
                    r["verdict"] or "–",
                    md_escape(r["resampled"] or "–"),
                ]
            )
        lines += markdown_table(["category", "A", "B", "Δ", f"{LEVEL:.0%} interval", "verdict", "resampled"], rows)
        notes = [f"{r['category']}: {r['note']}" for _, r in part.iterrows() if r["note"] and r["category"] != "mean"]
        if notes:
            lines += ["", *(f"- {md_escape(n)}" for n in dict.fromkeys(notes))]
    return "\n".join(lines) + "\n"


def file_stem(b_name: str) -> str:
    from adrun.config import folder_name

    return f"compare_against_{folder_name(Path(b_name).name or 'other')}"


def write(a_dir: Path, b_dir: Path, resamples: int = RESAMPLES, seed: int = 0) -> tuple[pd.DataFrame, Path, float]:
    """Compare A with B; write ``compare_against_<B>.{md,csv}`` into A. Returns (table, md path, seconds)."""
    a_name, b_name = names(a_dir, b_dir)
    a, b = load_side(a_dir, a_name), load_side(b_dir, b_name)
    start = time.perf_counter()
    table = against(a, b, resamples, seed)
    seconds = time.perf_counter() - start
    stem = file_stem(str(b_dir))
    md = Path(a_dir) / f"{stem}.md"
    atomic_write_text(Path(a_dir) / f"{stem}.csv", table.to_csv(index=False, float_format="%.6f"))
    atomic_write_text(md, to_markdown(table, a, b, resamples))
    return table, md, seconds
