"""Records -> pandas -> CSV and Markdown tables.

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


def write_tables(exp_dir: Path) -> dict[str, pd.DataFrame]:
    """Rewrite ``metrics.csv``, ``pixel_auroc.{csv,md}`` and ``image_auroc.{csv,md}``; return the wide tables."""
    exp_dir = Path(exp_dir)
    records = read_records(exp_dir)
    atomic_write_text(exp_dir / "metrics.csv", long_metrics(records).to_csv(index=False))
    out = {}
    for name, metric in TABLES.items():
        table = wide(records, metric)
        atomic_write_text(exp_dir / f"{name}.csv", table.to_csv(float_format="%.6f"))
        atomic_write_text(exp_dir / f"{name}.md", to_markdown(table))
        out[name] = table
    return out
