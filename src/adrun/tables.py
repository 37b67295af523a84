"""Records -> pandas -> CSV and Markdown tables, the heatmap, comparisons and report.html.

Tables are always rebuilt from the records, never edited in place, so
``adrun table`` can regenerate every file of an experiment at any time.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from adrun.records import atomic_write_text, read_records

METRICS = ("image_AUROC", "image_F1Score", "pixel_AUROC", "pixel_F1Score")
TABLES = {"pixel_auroc": "pixel_AUROC", "image_auroc": "image_AUROC"}


def long_metrics(records: list[dict]) -> pd.DataFrame:
    rows = [
        {"model": r["label"], "category": r["category"], "metric": metric, "value": float(value)}
        for r in records
        if r.get("status") == "success"
        for metric, value in r.get("metrics", {}).items()
    ]
    return pd.DataFrame(rows, columns=["model", "category", "metric", "value"])


def wide(records: list[dict], metric: str) -> pd.DataFrame:
    """Rows: categories in run order, then ``mean``; columns: model labels in config order."""
    ok = [r for r in records if r.get("status") == "success" and metric in r.get("metrics", {})]
    models = list(dict.fromkeys(r["label"] for r in records))
    categories = list(dict.fromkeys(r["category"] for r in records))
    table = pd.DataFrame(index=pd.Index(categories, name="category"), columns=models, dtype=float)
    for r in ok:
        table.loc[r["category"], r["label"]] = float(r["metrics"][metric])
    table.loc["mean"] = table.mean(axis=0, skipna=True)
    return table


def to_markdown(table: pd.DataFrame, digits: int = 3) -> str:
    header = [table.index.name or "", *map(str, table.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * len(table.columns)) + "|"]
    for name, row in table.iterrows():
        cells = ["–" if pd.isna(v) else f"{v:.{digits}f}" for v in row]
        label = f"**{name}**" if name == "mean" else str(name)
        lines.append("| " + " | ".join([label, *cells]) + " |")
    return "\n".join(lines) + "\n"


TIMING = {  # record["timing"] key -> timing table column
    "fit_s": "fit s", "test_ms_per_image": "test ms/image", "images_per_s": "images/s",
    "peak_rss_mb": "peak RSS MB", "cuda_peak_mb": "CUDA peak MB",
}


def write_timing(exp_dir: Path, records: list[dict]) -> pd.DataFrame:
    """``timing.{csv,md}``: one row per successful cell with its cost figures (record["timing"])."""
    rows = [
        {"model": r["label"], "category": r["category"], "seed": r.get("seed"),
         **{column: r.get("timing", {}).get(key) for key, column in TIMING.items()}}
        for r in records
        if r.get("status") == "success"
    ]
    table = pd.DataFrame(rows, columns=["model", "category", "seed", *TIMING.values()])
    if table["CUDA peak MB"].isna().all():
        table = table.drop(columns="CUDA peak MB")  # a CPU run has none
    atomic_write_text(exp_dir / "timing.csv", table.to_csv(index=False))
    header = "| " + " | ".join(table.columns) + " |\n|" + "|".join(["---"] * 3 + ["---:"] * (len(table.columns) - 3))
    body = ["| " + " | ".join("–" if pd.isna(v) else f"{v:g}" if isinstance(v, float) else str(v) for v in row) + " |"
            for row in table.itertuples(index=False)]
    atomic_write_text(exp_dir / "timing.md", "\n".join([header + "|", *body]) + "\n")
    return table


def write_tables(exp_dir: Path, compare: list[str] | tuple[str, ...] = ()) -> dict[str, pd.DataFrame]:
    """Rewrite every derived file of an experiment from its records; return the tables.

    ``metrics.csv``, ``pixel_auroc.{csv,md,png}``, ``image_auroc.{csv,md}``, ``timing.{csv,md}``,
    ``compare_<name>.{csv,md}`` for each name in ``compare`` and for every comparison
    written earlier (so they never go stale), and ``report.html``. The returned dict
    holds the wide tables by name and each comparison's long table as ``compare_<name>``.
    """
    from adrun import compare as compare_lib
    from adrun import plots, report

    exp_dir = Path(exp_dir)
    names = list(dict.fromkeys([*compare, *compare_lib.existing(exp_dir)]))
    for name in names:
        compare_lib.load(name)  # an unknown name fails before any file is touched
    records = read_records(exp_dir)
    atomic_write_text(exp_dir / "metrics.csv", long_metrics(records).to_csv(index=False))
    out = {}
    for name, metric in TABLES.items():
        table = wide(records, metric)
        atomic_write_text(exp_dir / f"{name}.csv", table.to_csv(float_format="%.6f"))
        atomic_write_text(exp_dir / f"{name}.md", to_markdown(table))
        out[name] = table
    out["timing"] = write_timing(exp_dir, records)
    plots.heatmap(out["pixel_auroc"], exp_dir / "pixel_auroc.png", f"pixel AUROC: {exp_dir.name}")
    for name in names:
        out[f"compare_{name}"] = compare_lib.write(exp_dir, records, name)
    report.write_report(exp_dir, records, out)
    return out
