"""Our numbers next to a published reference: per category and model, ours, theirs and Δ.

Reference tables ship with adrun under ``adrun/references/<name>.csv`` in long format
(model, variant, match, category, metric, value). Their ``#`` header lines cite the
file every number was taken from and the settings it was measured with; they are
shown with every comparison, because a delta means little without them.

A result column is matched to the reference by its model's registry name (the
``name:`` that ``adrun models`` lists), whatever its label. When the reference holds
several variants of a model (one backbone or another), the first variant
whose ``match`` conditions (``key=value;...`` on the model entry) all hold is used,
else the reference's first variant, and the comparison says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pandas as pd

from adrun.errors import CompareError
from adrun.markdown import md_escape
from adrun.records import atomic_write_text
from adrun.wording import plural

METRICS = ("pixel_AUROC", "image_AUROC", "pixel_F1Score", "image_F1Score")
COLUMNS = [
    "metric",
    "model",
    "category",
    "ours",
    "reference",
    "delta",
    "reference_model",
    "note",
    "ours_std",
    "n",
    "spread",
]
# A Δ is "within" the seed spread when |Δ| <= SPREAD x the std over our seeds (n >= 2).
SPREAD = 2.0


@dataclass(frozen=True)
class Reference:
    name: str
    source: list[str]  # the file's "#" header lines, without the "# "
    rows: pd.DataFrame  # model, variant, match, category, metric, value


def _folder():
    return resources.files("adrun") / "references"


def names() -> list[str]:
    """The shipped reference tables, by name."""
    return sorted(p.name.removesuffix(".csv") for p in _folder().iterdir() if p.name.endswith(".csv"))


def load(name: str) -> Reference:
    if name not in names():
        raise CompareError(f"--compare {name}: no such reference; choose from {', '.join(names())}")
    text = (_folder() / f"{name}.csv").read_text(encoding="utf-8")
    source = [line[1:].strip() for line in text.splitlines() if line.startswith("#")]
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    from io import StringIO

    rows = pd.read_csv(StringIO(body), dtype={"match": str, "variant": str}, keep_default_na=False)
    rows["value"] = rows["value"].astype(float)
    return Reference(name, source, rows)


def _holds(model_config: dict, match: str) -> bool:
    for condition in filter(None, (c.strip() for c in str(match).split(";"))):
        key, _, expected = condition.partition("=")
        actual = str(model_config.get(key.strip()))
        # "wide_resnet50_2.tv_in1k" is a wide_resnet50_2: timm's tag names the weights.
        if actual != expected and not actual.startswith(expected + "."):
            return False
    return True


def pick_variant(ref: Reference, model: str, model_config: dict, metric: str) -> tuple[str | None, bool]:
    """(variant, matched): the reference rows to compare a model entry with, for one metric."""
    rows = ref.rows[(ref.rows.model == model) & (ref.rows.metric == metric)]
    variants = list(dict.fromkeys(rows.variant))
    for variant in variants:
        if _holds(model_config, rows[rows.variant == variant].match.iloc[0]):
            return variant, True
    return (variants[0], False) if variants else (None, False)


def _entries(records: list[dict]) -> list[tuple[str, str, dict]]:
    """(label, model name, model config) per result column, in config order."""
    seen: dict[str, tuple[str, str, dict]] = {}
    for r in records:
        seen.setdefault(r["label"], (r["label"], r.get("model", ""), r.get("config", {}).get("model", {})))
    return list(seen.values())


def compare(records: list[dict], ref: Reference) -> pd.DataFrame:
    """Long table: one row per metric x model label x category (then ``mean``).

    ``ours`` is the mean over the cell's seeds, ``ours_std`` their std and ``n`` their number;
    with two seeds or more, ``spread`` says whether Δ is within ``SPREAD`` x that std.
    """
    categories = list(dict.fromkeys(r["category"] for r in records))
    ours: dict[tuple[str, str, str], dict] = {}
    for r in records:
        if r.get("status") != "success":
            continue
        for m, v in (r.get("metrics") or {}).items():
            ours.setdefault((r["label"], r["category"], m), {})[r.get("seed")] = float(v)
    metrics = [m for m in METRICS if m in set(ref.rows.metric)]
    rows = []
    for metric in metrics:
        for label, model, config in _entries(records):
            variant, matched = pick_variant(ref, model, config, metric)
            if variant is None:
                note = f"{ref.name} has no {model} {metric}"
                rows += [_row(metric, label, c, ours.get((label, c, metric)), None, "", note) for c in categories]
                continue
            theirs = ref.rows[(ref.rows.model == model) & (ref.rows.metric == metric) & (ref.rows.variant == variant)]
            values = dict(zip(theirs.category, theirs.value, strict=True))
            name = f"{model} ({variant})" if matched else f"{model} ({variant}; none matches this config, so the first)"
            pairs = []
            for category in categories:
                mine, reference = ours.get((label, category, metric)), values.get(category)
                if reference is None:
                    note = f"not in {ref.name}"
                elif mine is None:
                    note = "no result"
                else:
                    note = ""
                    pairs.append((mine, reference))
                rows.append(_row(metric, label, category, mine, reference, name, note))
            if pairs:
                mean_ref = sum(p[1] for p in pairs) / len(pairs)
                note = f"over the {plural(len(pairs), 'category', 'categories')} with both values"
                rows.append(_row(metric, label, "mean", _mean_of(pairs), mean_ref, name, note))
            else:
                rows.append(_row(metric, label, "mean", None, None, name, "no category with both values"))
    return pd.DataFrame(rows, columns=COLUMNS)


def _mean_of(pairs: list[tuple[dict, float]]) -> dict | float:
    """The mean over categories: per seed when every category has the same seeds (so a spread exists)."""
    seed_sets = [set(mine) for mine, _ in pairs]
    if all(s == seed_sets[0] for s in seed_sets):
        return {seed: sum(mine[seed] for mine, _ in pairs) / len(pairs) for seed in seed_sets[0]}
    return sum(sum(mine.values()) / len(mine) for mine, _ in pairs) / len(pairs)


def _row(metric, label, category, ours, reference, reference_model, note) -> dict:
    by_seed = ours if isinstance(ours, dict) else ({None: ours} if ours is not None else {})
    values = pd.Series(list(by_seed.values()), dtype=float)
    mean = values.mean() if len(values) else math.nan
    std = values.std(ddof=1) if len(values) >= 2 else math.nan
    both = len(values) and reference is not None
    delta = mean - reference if both else math.nan
    spread = ""
    if both and not math.isnan(std):
        spread = "within" if abs(delta) <= SPREAD * std else "outside"
    return {
        "metric": metric,
        "model": label,
        "category": category,
        "ours": mean,
        "reference": math.nan if reference is None else reference,
        "delta": delta,
        "reference_model": reference_model,
        "note": note,
        "ours_std": std,
        "n": len(values),
        "spread": spread,
    }


# --------------------------------------------------------------------------- rendering


def _number(value: float, sign: bool = False) -> str:
    if pd.isna(value):
        return "–"
    return f"{value:+.3f}" if sign else f"{value:.3f}"


def wide(table: pd.DataFrame, metric: str, name: str) -> pd.DataFrame:
    """Strings for display: rows categories then mean; per model label: ours, ``name``, Δ.

    Models the reference has nothing for are left out (the notes say so).
    """
    part = table[(table.metric == metric) & (table.reference_model != "")]
    labels = list(dict.fromkeys(part.model))
    categories = list(dict.fromkeys(part.category))
    out = pd.DataFrame(index=pd.Index(categories, name="category"))
    for i, label in enumerate(labels):
        rows = part[part.model == label].set_index("category")
        # Column names must be unique; the displayed header drops the suffix.
        out[label] = [_number(rows.loc[c, "ours"]) + _spread_text(rows.loc[c, "ours_std"]) for c in categories]
        out[f"{name}\u200b{i}"] = [
            f"not in {name}" if rows.loc[c, "note"].startswith("not in") else _number(rows.loc[c, "reference"])
            for c in categories
        ]
        out[f"Δ\u200b{i}"] = [
            _number(rows.loc[c, "delta"], sign=True) + (f" ({rows.loc[c, 'spread']})" if rows.loc[c, "spread"] else "")
            for c in categories
        ]
    return out


def _spread_text(std: float) -> str:
    return "" if pd.isna(std) else f" ± {std:.3f}"


def header(column: str) -> str:
    return column.split("\u200b")[0]


def notes(table: pd.DataFrame, metric: str, name: str) -> list[str]:
    """What the table cannot show: which reference variant each model met, what is missing."""
    part = table[table.metric == metric]
    out = []
    for label in dict.fromkeys(part.model):
        rows = part[part.model == label]
        first = rows.iloc[0]
        if first.reference_model == "":
            out.append(f"{label}: {first.note}")
            continue
        out.append(f"{label} is compared with {first.reference_model}")
        missing = rows[rows.note.str.startswith("not in")]
        if len(missing):
            out.append(f"{label}: {name} has no {', '.join(missing.category)}")
    if (part.spread != "").any():
        out.append(
            f"ours: mean ± std over our seeds; Δ is within the seed spread when |Δ| ≤ {SPREAD:g} × that std, "
            "outside otherwise"
        )
    return out


def to_markdown(table: pd.DataFrame, ref: Reference, synthetic: bool = False) -> str:

    lines = [f"# Compared with `{ref.name}`", ""]
    lines += [f"> {line}" if line else ">" for line in ref.source]
    if synthetic:
        lines += [
            "",
            f"**Our numbers are on synthetic data, {ref.name}'s on MVTec AD: the deltas show the "
            "plumbing, not how the models compare.**",
        ]
    for metric in dict.fromkeys(table.metric):
        view = wide(table, metric, ref.name)
        lines += ["", f"## {metric}", ""]
        if len(view.columns):
            lines.append("| " + " | ".join(["category", *(md_escape(header(c)) for c in view.columns)]) + " |")
            lines.append("|" + "|".join(["---"] + ["---:"] * len(view.columns)) + "|")
            for category, row in view.iterrows():
                label = f"**{category}**" if category == "mean" else md_escape(category)
                lines.append("| " + " | ".join([label, *row]) + " |")
            lines.append("")
        lines += [f"- {md_escape(note)}" for note in notes(table, metric, ref.name)]
        lines.append("- mean: over the categories that have both values")
    return "\n".join(lines) + "\n"


def write(exp_dir: Path, records: list[dict], name: str) -> pd.DataFrame:
    """Write ``compare_<name>.{csv,md}`` into the experiment folder; return the long table."""
    ref = load(name)
    table = compare(records, ref)
    synthetic = any(r.get("config", {}).get("data", {}).get("format") == "synthetic" for r in records)
    atomic_write_text(Path(exp_dir) / f"compare_{name}.csv", table.to_csv(index=False, float_format="%.6f"))
    atomic_write_text(Path(exp_dir) / f"compare_{name}.md", to_markdown(table, ref, synthetic))
    return table


def existing(exp_dir: Path) -> list[str]:
    """Comparisons asked for earlier (their CSV is there), so a table refresh keeps them current."""
    known = set(names())
    found = (p.name.removeprefix("compare_").removesuffix(".csv") for p in Path(exp_dir).glob("compare_*.csv"))
    return sorted(n for n in found if n in known)
