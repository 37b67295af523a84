"""Reference tables and comparisons, on hand-written records: no model runs here."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from adrun import compare
from adrun.cli import app
from adrun.errors import CompareError
from adrun.records import write_record

runner = CliRunner()


def record(label, model, category, pixel, image=None, index=0, category_index=0, **model_config):
    metrics = {"pixel_AUROC": pixel}
    if image is not None:
        metrics["image_AUROC"] = image
    return {
        "status": "success",
        "label": label,
        "model": model,
        "category": category,
        "index": index,
        "category_index": category_index,
        "metrics": metrics,
        "seconds": {"fit": 1.0, "test": 0.5, "total": 1.5},
        "config": {
            "experiment": "exp",
            "model": {"name": model, **model_config},
            "data": {"format": "mvtec"},
            "trainer": {},
        },
        "versions": {"anomalib": "2.7.0"},
    }


@pytest.fixture
def experiment(tmp_path):
    """Two labels of one model (WRN50 and ResNet-18), one EfficientAd, on tile, grid and a user category."""
    exp = tmp_path / "exp"
    records = [
        record("pc-wide", "patchcore", "tile", 0.90, 0.95, 0, 0, backbone="wide_resnet50_2.tv_in1k"),
        record("pc-wide", "patchcore", "grid", 0.97, 0.90, 0, 1, backbone="wide_resnet50_2.tv_in1k"),
        record("pc-wide", "patchcore", "bracket", 0.80, 0.70, 0, 2, backbone="wide_resnet50_2.tv_in1k"),
        record("pc-r18", "patchcore", "tile", 0.93, 0.99, 1, 0, backbone="resnet18"),
        record("pc-r18", "patchcore", "grid", 0.95, 0.91, 1, 1, backbone="resnet18"),
        record("pc-r18", "patchcore", "bracket", 0.85, 0.75, 1, 2, backbone="resnet18"),
        record("ead", "efficient_ad", "tile", 0.80, 0.97, 2, 0, model_size="small"),
        record("ead", "efficient_ad", "grid", 0.85, 0.98, 2, 1, model_size="small"),
        record("ead", "efficient_ad", "bracket", 0.70, 0.60, 2, 2, model_size="small"),
    ]
    for r in records:
        write_record(exp / "runs" / r["label"] / r["category"], r)
    return exp


def test_shipped_references_cite_their_sources():
    assert compare.names() == ["anomalib", "assignment", "patchcore-paper"]
    for name in compare.names():
        ref = compare.load(name)
        assert any("Source:" in line for line in ref.source), name
        assert any("Settings" in line for line in ref.source), name
        assert list(ref.rows.columns) == ["model", "variant", "match", "category", "metric", "value"]
        assert ref.rows.value.between(0, 1).all()
    assignment = compare.load("assignment").rows.set_index(["model", "category"]).value
    assert assignment["patchcore"].to_dict() == {"tile": 0.948, "leather": 0.990, "grid": 0.980}
    assert assignment["efficient_ad"].to_dict() == {"tile": 0.796, "leather": 0.938, "grid": 0.848}
    paper = compare.load("patchcore-paper").rows
    im224 = paper[(paper.variant == "IM224 WR50 10% coreset") & (paper.metric == "pixel_AUROC")]
    assert im224.set_index("category").value.round(3)[["tile", "leather", "grid"]].tolist() == [0.957, 0.993, 0.988]
    anomalib = compare.load("anomalib").rows
    assert len(anomalib[anomalib.model == "patchcore"]) == 2 * 2 * 15  # WRN50 + R18, pixel + image, 15 categories
    assert len(anomalib[anomalib.model == "efficient_ad"]) == 2 * 15  # S + M, image only
    assert set(anomalib[anomalib.model == "efficient_ad"].metric) == {"image_AUROC"}


def test_values_delta_and_mean(experiment):
    from adrun.records import read_records

    table = compare.compare(read_records(experiment), compare.load("assignment"))
    wide = table[(table.model == "pc-wide") & (table.metric == "pixel_AUROC")].set_index("category")
    assert wide.loc["tile", "ours"] == 0.90 and wide.loc["tile", "reference"] == 0.948
    assert wide.loc["tile", "delta"] == pytest.approx(0.90 - 0.948)
    assert wide.loc["grid", "delta"] == pytest.approx(0.97 - 0.980)
    # The mean is over the categories both sides have: tile and grid, not bracket.
    assert wide.loc["mean", "ours"] == pytest.approx((0.90 + 0.97) / 2)
    assert wide.loc["mean", "reference"] == pytest.approx((0.948 + 0.980) / 2)
    assert wide.loc["mean", "delta"] == pytest.approx((0.90 + 0.97) / 2 - (0.948 + 0.980) / 2)
    assert pd.isna(wide.loc["bracket", "reference"]) and wide.loc["bracket", "note"] == "not in assignment"
    # Matched by model name, whatever the label: efficient_ad's study numbers.
    ead = table[table.model == "ead"].set_index("category")
    assert ead.loc["tile", "reference"] == 0.796
    assert set(table.metric) == {"pixel_AUROC"}  # the study reported nothing else


def test_variant_follows_the_config(experiment):
    from adrun.records import read_records

    table = compare.compare(read_records(experiment), compare.load("anomalib"))
    pixel = table[table.metric == "pixel_AUROC"]
    by = {label: rows.set_index("category") for label, rows in pixel.groupby("model")}
    assert by["pc-wide"].loc["tile", "reference"] == 0.961  # Wide ResNet-50 row of the README
    assert by["pc-wide"].loc["tile", "reference_model"] == "patchcore (Wide ResNet-50)"
    assert by["pc-r18"].loc["tile", "reference"] == 0.943  # ResNet-18 row
    assert (by["ead"].reference_model == "").all()  # anomalib publishes no EfficientAd pixel AUROC
    image = table[(table.metric == "image_AUROC") & (table.model == "ead")].set_index("category")
    assert (
        image.loc["tile", "reference"] == 1.000
        and image.loc["tile", "reference_model"] == "efficient_ad (EfficientAd-S)"
    )


def test_markdown_says_what_is_missing(experiment):
    from adrun.records import read_records

    ref = compare.load("patchcore-paper")
    md = compare.to_markdown(compare.compare(read_records(experiment), ref), ref)
    lines = md.splitlines()
    assert lines[0] == "# Compared with `patchcore-paper`"
    assert "> Source: github.com/amazon-science/patchcore-inspection at commit" in md
    header = "| category | pc-wide | patchcore-paper | Δ | pc-r18 | patchcore-paper | Δ |"
    assert header in lines
    start = lines.index(header)
    assert lines[start + 2] == "| tile | 0.900 | 0.957 | -0.057 | 0.930 | 0.957 | -0.027 |"
    assert lines[start + 4] == "| bracket | 0.800 | not in patchcore-paper | – | 0.850 | not in patchcore-paper | – |"
    assert lines[start + 5].startswith("| **mean** | 0.935 |")
    assert "- pc-wide: patchcore-paper has no bracket" in lines
    assert "- ead: patchcore-paper has no efficient_ad pixel_AUROC" in lines
    assert (
        "- pc-r18 is compared with patchcore (IM224 WR50 10% coreset; none matches this config, so the first)" in lines
    )


def test_cli_compare_writes_files_and_prints_deltas(experiment):
    result = runner.invoke(app, ["table", str(experiment), "--compare", "assignment", "--compare", "anomalib"])
    assert result.exit_code == 0, result.output
    assert "| tile | 0.900 | 0.948 | -0.048 |" in result.output
    for name in ("assignment", "anomalib"):
        assert (experiment / f"compare_{name}.md").is_file()
        csv = pd.read_csv(experiment / f"compare_{name}.csv")
        assert list(csv.columns) == compare.COLUMNS
    # A plain refresh keeps the comparisons asked for earlier up to date.
    (experiment / "compare_assignment.md").unlink()
    assert runner.invoke(app, ["table", str(experiment)]).exit_code == 0
    assert (experiment / "compare_assignment.md").is_file()
    html = (experiment / "report.html").read_text()
    assert "Compared with <code>assignment</code>" in html and "Compared with <code>anomalib</code>" in html


def test_unknown_reference_is_one_line_and_exit_2(experiment):
    result = runner.invoke(app, ["table", str(experiment), "--compare", "mvtec-paper"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "adrun: error: --compare mvtec-paper: no such reference; choose from anomalib, assignment, patchcore-paper"
    ]
    assert not (experiment / "metrics.csv").exists()  # checked before any file is written
    with pytest.raises(CompareError):
        compare.load("../records")


def test_refresh_writes_heatmap_and_report(experiment):
    from PIL import Image

    from adrun.tables import write_tables

    write_tables(experiment)
    with Image.open(experiment / "pixel_auroc.png") as image:
        assert image.format == "PNG" and image.width > 300 and image.height > 200
        # Not blank: the cells are coloured.
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20)) > 50
    html = (experiment / "report.html").read_text()
    assert html.count("<table") >= 3 and "data:image/png;base64," in html
    assert "pc-wide / bracket" in html and "no sample grid" in html  # hand-written records have none
    assert 'src="http' not in html and 'href="http' not in html and "<script" not in html
    record = json.loads((experiment / "runs/pc-wide/tile/record.json").read_text())
    assert record["seconds"]["fit"] == 1.0
