"""The shipped anomalib reference table is exactly what scripts/make_references.py parses from the READMEs."""

from __future__ import annotations

import runpy
from pathlib import Path

from adrun import compare

REPO = Path(__file__).resolve().parents[1]


def test_anomalib_csv_is_regenerated_from_the_installed_readmes(tmp_path):
    script = runpy.run_path(str(REPO / "scripts" / "make_references.py"))
    out = tmp_path / "anomalib.csv"
    script["main"](out)
    shipped = REPO / "src" / "adrun" / "references" / "anomalib.csv"
    assert out.read_text(encoding="utf-8") == shipped.read_text(encoding="utf-8")


def test_every_parsed_model_is_cited_and_has_both_tables_where_published():
    ref = compare.load("anomalib")
    rows = ref.rows
    for model in dict.fromkeys(rows.model):
        assert any(f"models/image/{model}/README.md" in line for line in ref.source), model
        for (variant, metric), group in rows[rows.model == model].groupby(["variant", "metric"]):
            assert len(group) == 15, (model, variant, metric)  # every MVTec AD category, no Avg
    # Values straight from the README tables (padim ResNet-18 tile; cfa's and fastflow's tables are
    # transposed; csflow has one table per image size; AnomalyVFM publishes percentages).
    key = rows.set_index(["model", "variant", "category", "metric"]).value
    assert key["padim", "ResNet-18", "tile", "pixel_AUROC"] == 0.934
    assert key["cfa", "Wide ResNet-50", "tile", "image_AUROC"] == 0.999
    assert key["fastflow", "CaiT", "screw", "image_AUROC"] == 0.791
    assert key["csflow", "EfficientNet-B5 256 px", "tile", "image_AUROC"] == 0.972
    assert key["anomalyvfm", "AnomalyVFM", "tile", "image_AUROC"] == 0.9942
    # l2bt's VisA tables share the MVTec headings and must not leak in.
    assert set(rows[rows.model == "l2bt"].category) == set(rows[rows.model == "padim"].category)


def test_variant_is_picked_by_the_new_models_config():
    ref = compare.load("anomalib")
    assert compare.pick_variant(ref, "padim", {"backbone": "resnet18"}, "pixel_AUROC") == ("ResNet-18", True)
    assert compare.pick_variant(ref, "fastflow", {"backbone": "cait_m48_448"}, "image_AUROC") == ("CaiT", True)
    assert compare.pick_variant(ref, "supersimplenet", {"adapt_cls_features": False}, "image_AUROC") == ("JIMS", True)
    assert compare.pick_variant(ref, "dfkde", {"backbone": "resnet18"}, "pixel_AUROC") == (None, False)
