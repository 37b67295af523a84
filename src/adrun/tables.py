"""Records -> pandas -> CSV and Markdown tables, the heatmap, comparisons and report.html.

Tables are always rebuilt from the records, never edited in place, so
``adrun table`` can regenerate every file of an experiment at any time.

A table shows exactly the cells of the config that was run: the plan the last sweep
wrote (``plan.json``). A record on disk whose folder and key are not among the plan's
cells (an earlier seed, category or setting) stays on disk but out of the tables and
the means; ``Selection.left_out`` says which and why, and ``adrun table DIR --all``
lists every record. Each table cell is the mean ± std over the cell's seeds, with n.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from adrun.markdown import md_escape, metric_title
from adrun.records import atomic_write_text, read_plan, read_record_at, read_records

# Written even before any cell succeeded; every other metric key of the records gets its table too.
FIRST = ("pixel_AUROC", "image_AUROC")
# What a table shows where a run succeeded without the metric (an image-only model, or no masks).
NOT_AVAILABLE = "n/a"
# Why a record on disk is not in the tables, in the order they are told.
REASONS = ("other seed", "other settings", "other category", "other model")


def table_name(metric: str) -> str:
    """``pixel_AUROC`` -> ``pixel_auroc``: the file stem of a metric's table."""
    return metric.lower()


# --------------------------------------------------------------------------- which records


@dataclass
class Selection:
    """The records a refresh shows (the plan's cells, any status) and those it leaves out."""

    records: list[dict]
    left_out: list[tuple[dict, str]] = field(default_factory=list)
    plan: dict | None = None

    def reasons(self) -> dict[str, int]:
        counts = Counter(reason for _, reason in self.left_out)
        return {r: counts[r] for r in REASONS if counts[r]}

    def summary(self) -> str | None:
        """One line for the terminal: how many records were left out and why; None when none were."""
        if not self.left_out:
            return None
        why = ", ".join(f"{n} {reason}" for reason, n in self.reasons().items())
        n = len(self.left_out)
        return (
            f"{n} record{'s' if n != 1 else ''} on disk left out of the tables ({why}): not cells of "
            "this config; `adrun table DIR --all` lists every record"
        )

    @property
    def categories(self) -> list[str]:
        source = self.plan["cells"] if self.plan else self.records
        return list(dict.fromkeys(c["category"] for c in sorted(source, key=_position)))

    @property
    def labels(self) -> list[str]:
        source = self.plan["cells"] if self.plan else self.records
        return list(dict.fromkeys(c["label"] for c in sorted(source, key=lambda c: c.get("index", 0))))

    @property
    def experiment(self) -> str | None:
        if self.plan and self.plan.get("experiment"):
            return self.plan["experiment"]
        return next((r.get("config", {}).get("experiment") for r in self.records if r.get("config")), None)


def _position(c: dict) -> tuple:
    return (c.get("category_index", 0), c.get("index", 0))


def select(exp_dir: Path, plan: dict | None = None, everything: bool = False) -> Selection:
    """The plan's records (from ``plan.json`` unless given); all records with ``everything`` or no plan."""
    exp_dir = Path(exp_dir)
    if plan is None and not everything:
        plan = read_plan(exp_dir)
    found = read_records(exp_dir)
    if plan is None or everything:
        return Selection(found, [], None)
    chosen = []
    for cell in plan["cells"]:
        # The same rule that named the folder finds the record: cell.folder, written into the plan.
        record = read_record_at(exp_dir, cell["folder"])
        if record is not None and record.get("key") == cell["key"]:
            # The plan's positions order the table (a record keeps the ones of its own config).
            chosen.append({**record, "index": cell["index"], "category_index": cell["category_index"]})
    shown = {r["folder"] for r in chosen}
    left = [(r, _reason(r, plan)) for r in found if r["folder"] not in shown]
    return Selection(chosen, left, plan)


def _reason(record: dict, plan: dict) -> str:
    cells = plan["cells"]
    if record.get("category") not in {c["category"] for c in cells}:
        return "other category"
    if record.get("label") not in {c["label"] for c in cells}:
        return "other model"
    seeds = {c["seed"] for c in cells if c["label"] == record.get("label") and c["category"] == record["category"]}
    return "other settings" if record.get("seed") in seeds else "other seed"


# --------------------------------------------------------------------------- metric tables


@dataclass
class MetricTable:
    """One metric, categories (then ``mean``) x model labels: mean, std and n over the seeds.

    ``std`` is the sample standard deviation (ddof 1), NaN where a cell has fewer than two
    seeds. The ``mean`` row averages the per-category means; its std is that of the
    per-seed category averages, given only where every category has the same seeds.
    """

    metric: str
    mean: pd.DataFrame
    std: pd.DataFrame
    n: pd.DataFrame
    seeds: list[int]
    experiment: str | None = None
    # (category, label) cells whose runs succeeded without this metric: an image-only
    # model, or data without masks. Shown as "n/a", apart from "–" (no finished run).
    unavailable: frozenset[tuple[str, str]] = frozenset()

    @property
    def title(self) -> str:
        return metric_title(self.metric) + (f": {self.experiment}" if self.experiment else "")

    @property
    def spread(self) -> bool:
        """Whether any cell has two seeds or more."""
        return bool((self.n.drop(index="mean", errors="ignore") >= 2).to_numpy().any())

    def text(self, category: str, label: str, digits: int = 3, show_n: bool | None = None) -> str:
        """``0.961 ± 0.004``, ``0.961`` (one seed) or ``–``; ``(n=2)`` where n differs from the usual."""
        mean, std, n = self.mean.loc[category, label], self.std.loc[category, label], self.n.loc[category, label]
        if pd.isna(mean):
            return NOT_AVAILABLE if (category, label) in self.unavailable else "–"
        out = f"{mean:.{digits}f}" + ("" if pd.isna(std) else f" ± {std:.{digits}f}")
        usual = self.usual_n()
        if show_n or (show_n is None and category != "mean" and int(n) != usual):
            out += f" (n={int(n)})"
        return out

    def usual_n(self) -> int:
        """The most common number of seeds among the filled cells (the footer's n)."""
        body = self.n.drop(index="mean", errors="ignore").to_numpy().ravel()
        filled = [int(v) for v in body if v > 0]
        return Counter(filled).most_common(1)[0][0] if filled else 0

    def footer(self) -> str:
        n = self.usual_n()
        missing = (
            (
                f" {NOT_AVAILABLE}: the run succeeded but gives no {metric_title(self.metric)} "
                "(an image-only model, or data without masks)."
            )
            if self.unavailable
            else ""
        )
        if not n:
            return "No finished cell yet." if not missing else "No value in any cell." + missing
        seeds = ", ".join(map(str, self.seeds))
        if len(self.seeds) <= 1:
            return (
                f"One run per cell (seed {seeds}): no spread; give several seeds (`seeds: [0, 1, 2]`) for one."
                + missing
            )
        return (
            f"Mean ± std over seeds {seeds} (n = {n} per cell unless marked); "
            "the mean row averages the per-category means." + missing
        )

    def strings(self) -> pd.DataFrame:
        """The table as display strings, same shape as ``mean``."""
        return pd.DataFrame(
            {c: [self.text(i, c) for i in self.mean.index] for c in self.mean.columns}, index=self.mean.index
        )


def metric_table(selection: Selection, metric: str) -> MetricTable:
    records = [r for r in selection.records if r.get("status") == "success" and metric in (r.get("metrics") or {})]
    categories, labels = selection.categories, selection.labels
    index = pd.Index([*categories, "mean"], name="category")
    mean = pd.DataFrame(math.nan, index=index, columns=labels, dtype=float)
    std, n = mean.copy(), pd.DataFrame(0, index=index, columns=labels, dtype=int)
    values: dict[tuple[str, str], dict[int | None, float]] = {}  # seed None: a record from before seeds
    for r in records:
        values.setdefault((r["category"], r["label"]), {})[r.get("seed")] = float(r["metrics"][metric])
    for (category, label), by_seed in values.items():
        if category not in mean.index or label not in mean.columns:
            continue
        series = pd.Series(list(by_seed.values()), dtype=float)
        mean.loc[category, label] = series.mean()
        std.loc[category, label] = series.std(ddof=1) if len(series) >= 2 else math.nan
        n.loc[category, label] = len(series)
    for label in labels:
        per_category = mean.loc[categories, label]
        mean.loc["mean", label] = per_category.mean(skipna=True)
        seed_sets = [set(values.get((c, label), {})) for c in categories if (c, label) in values]
        if seed_sets and all(s == seed_sets[0] for s in seed_sets) and len(seed_sets) == len(categories):
            n.loc["mean", label] = len(seed_sets[0])
            if len(seed_sets[0]) >= 2:
                per_seed = [sum(values[(c, label)][s] for c in categories) / len(categories) for s in seed_sets[0]]
                std.loc["mean", label] = pd.Series(per_seed).std(ddof=1)
    seeds = sorted({r["seed"] for r in records if isinstance(r.get("seed"), int)})
    if selection.plan:
        seeds = sorted({c["seed"] for c in selection.plan["cells"]})
    without = {
        (r["category"], r["label"])
        for r in selection.records
        if r.get("status") == "success" and metric not in (r.get("metrics") or {})
    } - set(values)
    for label in labels:  # the mean of a model that has the metric in no category
        if categories and all((c, label) in without for c in categories):
            without.add(("mean", label))
    return MetricTable(metric, mean, std, n, seeds, selection.experiment, frozenset(without))


def wide(records: list[dict], metric: str) -> pd.DataFrame:
    """The means alone: rows categories in run order, then ``mean``; columns model labels."""
    return metric_table(Selection(records), metric).mean


def metrics_of(selection: Selection) -> list[str]:
    """Every metric key among the shown records: pixel and image AUROC first, then as they come."""
    found = [
        m
        for r in selection.records
        if r.get("status") == "success"
        for m in [*(r.get("metrics") or {}), *(r.get("unavailable") or {})]
    ]
    return list(dict.fromkeys([*FIRST, *found]))


def long_metrics(records: list[dict]) -> pd.DataFrame:
    """Every value of every shown record: one row per model, category, seed and metric."""
    rows = [
        {"model": r["label"], "category": r["category"], "seed": r.get("seed"), "metric": metric, "value": float(value)}
        for r in records
        if r.get("status") == "success"
        for metric, value in (r.get("metrics") or {}).items()
    ]
    return pd.DataFrame(rows, columns=["model", "category", "seed", "metric", "value"])


def to_csv(table: MetricTable) -> str:
    """Wide CSV: per model label its mean, then ``<label> std`` and ``<label> n``."""
    out = pd.DataFrame(index=table.mean.index)
    for label in table.mean.columns:
        out[label] = [
            f"{v:.6f}" if not pd.isna(v) else NOT_AVAILABLE if (c, label) in table.unavailable else ""
            for c, v in table.mean[label].items()
        ]
        out[f"{label} std"] = table.std[label]
        out[f"{label} n"] = table.n[label]
    return out.to_csv(float_format="%.6f")


# --------------------------------------------------------------------------- Markdown


def markdown_table(header: list[str], rows: list[list[str]], bold_last: str | None = "mean") -> list[str]:
    """Lines of a Markdown table; the first column is the row name (escaped), ``bold_last`` set in bold."""
    lines = [
        "| " + " | ".join(md_escape(h) for h in header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    for name, *cells in rows:
        label = f"**{name}**" if name == bold_last else md_escape(name)
        lines.append("| " + " | ".join([label, *cells]) + " |")
    return lines


def to_markdown(table: MetricTable | pd.DataFrame, digits: int = 3) -> str:
    """A metric table with a title line naming the metric and the experiment, and a footer on the seeds."""
    if isinstance(table, pd.DataFrame):  # a plain wide table of numbers
        rows = [[str(name), *("–" if pd.isna(v) else f"{v:.{digits}f}" for v in row)] for name, row in table.iterrows()]
        return "\n".join(markdown_table([table.index.name or "", *map(str, table.columns)], rows)) + "\n"
    strings = table.strings()
    rows = [[str(name), *row] for name, row in strings.iterrows()]
    lines = [f"# {md_escape(table.title)}", ""]
    lines += markdown_table([table.mean.index.name or "category", *map(str, table.mean.columns)], rows)
    lines += ["", table.footer()]
    return "\n".join(lines) + "\n"


TIMING = {  # record["timing"] key -> timing table column
    "fit_s": "fit s",
    "test_ms_per_image": "test ms/image",
    "images_per_s": "images/s",
    "peak_rss_mb": "peak RSS MB",
    "cuda_peak_mb": "CUDA peak MB",
}


def write_timing(exp_dir: Path, records: list[dict]) -> pd.DataFrame:
    """``timing.{csv,md}``: one row per successful cell with its cost figures (record["timing"])."""
    rows = [
        {
            "model": r["label"],
            "category": r["category"],
            "seed": r.get("seed"),
            **{column: r.get("timing", {}).get(key) for key, column in TIMING.items()},
        }
        for r in records
        if r.get("status") == "success"
    ]
    table = pd.DataFrame(rows, columns=["model", "category", "seed", *TIMING.values()])
    if table["CUDA peak MB"].isna().all():
        table = table.drop(columns="CUDA peak MB")  # a CPU run has none
    atomic_write_text(exp_dir / "timing.csv", table.to_csv(index=False))
    header = "| " + " | ".join(table.columns) + " |\n|" + "|".join(["---"] * 3 + ["---:"] * (len(table.columns) - 3))
    body = [
        "| " + " | ".join("–" if pd.isna(v) else f"{v:g}" if isinstance(v, float) else str(v) for v in row) + " |"
        for row in table.itertuples(index=False)
    ]
    atomic_write_text(exp_dir / "timing.md", "\n".join([header + "|", *body]) + "\n")
    return table


# --------------------------------------------------------------------------- every record


CELL_FIELDS = {"experiment", "label", "index", "category_index", "category", "seed"}


def _flat(value, prefix: str = "") -> dict[str, str]:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): json.dumps(value) if not isinstance(value, str) else value}


def settings_of(record: dict) -> dict[str, str]:
    """The settings that decide a record's result, flattened (``model.image_size``: ``64``)."""
    config = {k: v for k, v in (record.get("config") or {}).items() if k not in CELL_FIELDS}
    data = dict(config.get("data") or {})
    for key in ("categories", "num_workers"):  # not part of a cell's key
        data.pop(key, None)
    config["data"] = data
    out = _flat(config)
    out["adrun"] = (record.get("versions") or {}).get("adrun", "?")
    return out


def all_records(exp_dir: Path) -> pd.DataFrame:
    """One row per record on disk: label, category, seed, status, the settings that differ, the metrics."""
    records = read_records(exp_dir)
    settings = [settings_of(r) for r in records]
    keys = list(dict.fromkeys(k for s in settings for k in s))
    differing = [k for k in keys if len({s.get(k, "–") for s in settings}) > 1]
    metrics = list(
        dict.fromkeys(m for r in records for m in [*(r.get("metrics") or {}), *(r.get("unavailable") or {})])
    )
    rows = []
    for r, s in zip(records, settings, strict=True):
        row = {"label": r.get("label"), "category": r.get("category"), "seed": r.get("seed"), "status": r.get("status")}
        row.update({k: s.get(k, "–") for k in differing})
        row.update(
            {
                m: (r.get("metrics") or {}).get(m, NOT_AVAILABLE if m in (r.get("unavailable") or {}) else math.nan)
                for m in metrics
            }
        )
        row["folder"] = r["folder"]
        rows.append(row)
    return pd.DataFrame(rows, columns=["label", "category", "seed", "status", *differing, *metrics, "folder"])


def all_markdown(frame: pd.DataFrame, experiment: str, digits: int = 3) -> str:
    rows = []
    for _, row in frame.iterrows():
        rows.append(
            [md_escape(v) if not isinstance(v, float) else ("–" if pd.isna(v) else f"{v:.{digits}f}") for v in row]
        )
    lines = [f"# Every record: {md_escape(experiment)}", ""]
    if len(frame.columns):
        lines += markdown_table(list(frame.columns), rows, bold_last=None)
        lines[2] = "|" + "|".join("---" for _ in frame.columns) + "|"
    lines += ["", "Columns between status and the metrics are the settings that differ between these records."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the refresh


@dataclass
class Tables:
    """What a refresh wrote: the metric tables by file stem, the comparisons, and the selection."""

    metrics: dict[str, MetricTable]
    comparisons: dict[str, pd.DataFrame]
    selection: Selection
    timing: pd.DataFrame | None = None

    def get(self, name: str) -> MetricTable | None:
        return self.metrics.get(name)

    def __getitem__(self, name: str) -> MetricTable:
        return self.metrics[name]


def write_tables(exp_dir: Path, compare: list[str] | tuple[str, ...] = ()) -> Tables:
    """Rewrite every derived file of an experiment from the records of its plan; return the tables.

    ``metrics.csv``, ``<metric>.{csv,md}`` for every metric key (``pixel_auroc``,
    ``image_auroc``, ...), ``timing.{csv,md}``, ``pixel_auroc.png``, ``compare_<name>.{csv,md}`` for each name in
    ``compare`` and for every comparison written earlier (so they never go stale), and
    ``report.html``.
    """
    from adrun import compare as compare_lib
    from adrun import plots, report

    exp_dir = Path(exp_dir)
    names = list(dict.fromkeys([*compare, *compare_lib.existing(exp_dir)]))
    for name in names:
        compare_lib.load(name)  # an unknown name fails before any file is touched
    selection = select(exp_dir)
    records = selection.records
    atomic_write_text(exp_dir / "metrics.csv", long_metrics(records).to_csv(index=False))
    out: dict[str, MetricTable] = {}
    for metric in metrics_of(selection):
        table = metric_table(selection, metric)
        name = table_name(metric)
        atomic_write_text(exp_dir / f"{name}.csv", to_csv(table))
        atomic_write_text(exp_dir / f"{name}.md", to_markdown(table))
        out[name] = table
    heat = out["pixel_auroc"]
    plots.heatmap(heat, exp_dir / "pixel_auroc.png", f"{heat.title or metric_title(heat.metric)}")
    comparisons = {name: compare_lib.write(exp_dir, records, name) for name in names}
    tables = Tables(out, comparisons, selection, write_timing(exp_dir, records))
    report.write_report(exp_dir, tables)
    return tables
