"""``report.html``: one self-contained page per experiment.

The tables, the heatmap, the comparisons and, per cell, its sample grid, settings and
timings, all from the records and the files beside them. Images are inlined as base64
(the heatmap as PNG, the sample grids as JPEG) and the page has no scripts and no network
references, so it opens straight from the file system and can be mailed as one file.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import pandas as pd

from adrun import __version__
from adrun.errors import RunError
from adrun.markdown import metric_title
from adrun.records import atomic_write_text, now, run_dir
from adrun.wording import plural

REPORT = "report.html"

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto;
       max-width: 1200px; padding: 0 1rem; color: #1d1d1f; }
h1 { margin-bottom: .2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
.meta { color: #666; }
table { border-collapse: collapse; margin: .6rem 0 1rem; }
th, td { border: 1px solid #d0d0d0; padding: .25rem .6rem; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.mean td, tr.mean th { font-weight: bold; border-top: 2px solid #888; }
td.neg { color: #b00020; } td.pos { color: #0a7d32; }
img { max-width: 100%; height: auto; display: block; margin: .5rem 0; }
.cell { margin: 1.5rem 0 2.5rem; } .error { color: #b00020; }
.source { color: #555; font-size: 12px; border-left: 3px solid #ccc; padding-left: .6rem; margin: .4rem 0; }
details { margin: .4rem 0; } summary { cursor: pointer; color: #333; }
table.kv td:first-child { color: #555; } .status-success { color: #0a7d32; } .status-failed { color: #b00020; }
"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def image_tag(path: Path, alt: str, photo: bool = False) -> str:
    """The PNG at ``path`` inlined as a data URI, or a note that it is missing.

    ``photo``: inline as JPEG (quality 90). Sample grids are mostly photographs and
    heat maps, a fifth of the bytes as JPEG; a report of 30 cells stays a few MB.
    """
    import io

    from PIL import Image

    path = Path(path)
    if not path.is_file():
        return f'<p class="error">{esc(alt)}: {esc(path.name)} is missing</p>'
    mime, payload = "image/png", path.read_bytes()
    if photo:
        buffer = io.BytesIO()
        with Image.open(path) as image:
            image.convert("RGB").save(buffer, format="JPEG", quality=90)
        mime, payload = "image/jpeg", buffer.getvalue()
    data = base64.b64encode(payload).decode("ascii")
    return f'<img src="data:{mime};base64,{data}" alt="{esc(alt)}">'


def _number(value) -> str:
    return "–" if pd.isna(value) else f"{float(value):.3f}"


def metric_table(table, caption: str) -> str:
    """A metric table (categories then mean x model labels) as HTML: "0.961 ± 0.004" where seeds spread.

    ``table`` is a ``tables.MetricTable`` or a plain wide DataFrame of numbers.
    """
    strings = table.map(_number) if isinstance(table, pd.DataFrame) else table.strings()
    head = "".join(f"<th>{esc(c)}</th>" for c in strings.columns)
    rows = []
    for name, row in strings.iterrows():
        cls = ' class="mean"' if name == "mean" else ""
        cells = "".join(f'<td class="num">{esc(v)}</td>' for v in row)
        rows.append(f"<tr{cls}><th>{esc(name)}</th>{cells}</tr>")
    foot = "" if isinstance(table, pd.DataFrame) else f'<p class="meta">{esc(table.footer())}</p>'
    return (
        f"<table><caption>{esc(caption)}</caption><thead><tr><th>category</th>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>{foot}"
    )


def comparison_section(name: str, table: pd.DataFrame) -> str:
    from adrun import compare

    ref = compare.load(name)
    parts = [
        f"<h3>Compared with <code>{esc(name)}</code></h3>",
        '<div class="source">' + "<br>".join(esc(line) for line in ref.source) + "</div>",
    ]
    for metric in dict.fromkeys(table.metric):
        view = compare.wide(table, metric, name)
        parts.append(f"<h4>{esc(metric)}</h4>")
        if len(view.columns):
            head = "".join(f"<th>{esc(compare.header(c))}</th>" for c in view.columns)
            rows = []
            for category, row in view.iterrows():
                cls = ' class="mean"' if category == "mean" else ""
                cells = []
                for column, value in row.items():
                    sign = ""
                    if compare.header(column) == "Δ" and value not in ("–", "+0.000", "-0.000"):
                        sign = " neg" if value.startswith("-") else " pos"
                    cells.append(f'<td class="num{sign}">{esc(value)}</td>')
                rows.append(f"<tr{cls}><th>{esc(category)}</th>{''.join(cells)}</tr>")
            parts.append(
                f"<table><thead><tr><th>category</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
            )
        items = [*compare.notes(table, metric, name), "mean: over the categories that have both values"]
        parts.append("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in items) + "</ul>")
    return "\n".join(parts)


def _kv(pairs: list[tuple[str, object]]) -> str:
    rows = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in pairs)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def _flat(value, prefix: str = "") -> list[tuple[str, object]]:
    if isinstance(value, dict):
        return [pair for k, v in value.items() for pair in _flat(v, f"{prefix}{k}.")]
    return [(prefix.rstrip("."), json.dumps(value) if isinstance(value, list | bool) or value is None else value)]


def anchor(record: dict) -> str:
    return f"cell-{record['label']}-{record['category']}-seed-{record.get('seed')}"


def _inside_run(folder: Path, name: str) -> Path | None:
    """``folder / name`` when it stays inside the run folder, else None (never follow a path out)."""
    try:
        target = (folder / name).resolve()
    except (OSError, RuntimeError):
        return None
    return target if folder.resolve() in target.parents else None


def cell_section(exp_dir: Path, record: dict) -> str:
    label, category = record["label"], record["category"]
    where = record.get("folder") or "runs/?"
    try:
        folder = run_dir(exp_dir, where)
    except RunError:
        folder = None
    status = record.get("status", "?")
    seed = record.get("seed")
    parts = [
        f'<div class="cell" id="{esc(anchor(record))}"><h3>{esc(label)} / {esc(category)} '
        f'<span class="meta">seed {esc(seed)}</span> '
        f'<span class="status-{esc(status)}">({esc(status)})</span></h3>'
    ]
    if record.get("error"):
        parts.append(f'<p class="error">{esc(record["error"])} (see {esc(where)}/log.txt)</p>')
    metrics = record.get("metrics") or {}
    if metrics:
        parts.append(_kv([(k, f"{v:.4f}") for k, v in metrics.items()]))
    samples = record.get("samples")
    if samples:
        path = _inside_run(folder, str(samples)) if folder is not None else None
        if path is None:
            parts.append(f'<p class="error">sample grid {esc(samples)} lies outside the run folder; not shown</p>')
        else:
            parts.append(image_tag(path, f"sample grid {label} / {category}", photo=True))
    elif status == "success":
        why = record.get("samples_error") or "made before adrun drew sample grids; run `adrun test` on the cell"
        parts.append(f'<p class="error">no sample grid: {esc(why)}</p>')
    seconds = record.get("seconds") or {}
    timings: list[tuple[str, object]] = [(f"{k} (s)", f"{v:.1f}") for k, v in seconds.items()]
    timings += [("started", record.get("started_at")), ("finished", record.get("finished_at"))]
    if record.get("tested_at"):
        timings.append(("tested again", record["tested_at"]))
    parts.append("<h4>Timings</h4>" + _kv(timings))
    config = record.get("config") or {}
    settings = [
        ("seed", record.get("seed")),
        ("smoke", record.get("smoke")),
        ("key", record.get("key")),
        ("data root", record.get("data_root")),
        ("checkpoint", record.get("checkpoint")),
    ]
    settings += _flat(
        {"model": config.get("model", {}), "trainer": config.get("trainer", {}), "data": config.get("data", {})}
    )
    parts.append("<details><summary>Settings</summary>" + _kv(settings) + "</details>")
    parts.append(
        "<details><summary>Versions</summary>" + _kv(list((record.get("versions") or {}).items())) + "</details>"
    )
    parts.append("</div>")
    return "\n".join(parts)


def render(exp_dir: Path, tables) -> str:
    """The page for a refresh's ``tables.Tables``: its metric tables, comparisons and shown records."""
    exp_dir = Path(exp_dir)
    selection = tables.selection
    records = selection.records
    name = selection.experiment or exp_dir.name
    counts = pd.Series([r.get("status", "?") for r in records]).value_counts().to_dict() if records else {}
    summary = ", ".join(f"{v} {k}" for k, v in counts.items()) or "no cells yet"
    body = [
        f"<h1>{esc(name)}</h1>",
        f'<p class="meta">{esc(exp_dir)} · {plural(len(records), "cell")} ({esc(summary)}) · '
        f"written {esc(now())} by adrun {esc(__version__)}</p>",
    ]
    if selection.left_out:
        body.append(f'<p class="meta">{esc(selection.summary())}</p>')
    if any(r.get("config", {}).get("data", {}).get("format") == "synthetic" for r in records):
        body.append(
            '<p class="meta">Synthetic data: the numbers check the pipeline, they say nothing about MVTec AD.</p>'
        )
    body.append("<h2>Tables</h2>")
    for stem, table in tables.metrics.items():
        body.append(metric_table(table, metric_title(table.metric)))
        if stem == "pixel_auroc":
            body.append(image_tag(exp_dir / "pixel_auroc.png", "pixel AUROC heatmap"))
    if tables.comparisons:
        body.append("<h2>Comparisons</h2>")
        body += [comparison_section(n, t) for n, t in tables.comparisons.items()]
    body.append("<h2>Cells</h2>")
    body.append(
        "<ul>"
        + "".join(
            f'<li><a href="#{esc(anchor(r))}">{esc(r["label"])} / {esc(r["category"])} / seed {esc(r.get("seed"))}</a>'
            f" ({esc(r.get('status'))})</li>"
            for r in records
        )
        + "</ul>"
    )
    body += [cell_section(exp_dir, r) for r in records]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # No favicon request: nothing on this page may reach outside the file.
        '<link rel="icon" href="data:,">'
        f"<title>{esc(name)}: adrun report</title><style>{CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def write_report(exp_dir: Path, tables) -> Path:
    path = Path(exp_dir) / REPORT
    atomic_write_text(path, render(exp_dir, tables))
    return path
