"""The demo's data is meaningful: Patchcore with an untrained backbone scores clearly above chance.

This runs the shipped demo config itself (Patchcore cells only, full demo sizes), so a
wiring bug - masks misaligned with images, an inverted anomaly map - fails here.
"""

from __future__ import annotations

import json

import pytest
from conftest import CONFIGS
from typer.testing import CliRunner

from adrun.cli import app


@pytest.mark.slow
def test_demo_patchcore_is_well_above_chance(tmp_path):
    result = CliRunner().invoke(
        app, ["sweep", str(CONFIGS / "demo.yaml"), "--output", str(tmp_path), "--only", "patchcore/*"]
    )
    assert result.exit_code == 0, result.output
    for category in ("tile", "leather", "grid"):
        record = json.loads((tmp_path / "demo/runs/patchcore" / category / "seed-42" / "record.json").read_text())
        assert record["metrics"]["pixel_AUROC"] >= 0.8, (category, record["metrics"])
        assert record["metrics"]["image_AUROC"] >= 0.7, (category, record["metrics"])
    md = (tmp_path / "demo" / "pixel_auroc.md").read_text().splitlines()
    assert md[0] == "# pixel AUROC: demo"  # the title line names the metric and the experiment
    rows = [line.split(" | ")[0] for line in md if line.startswith("| ")][1:]  # after the header row
    assert rows == ["| tile", "| leather", "| grid", "| **mean**"]
