"""The demo's data is meaningful: Patchcore with an untrained backbone scores clearly above chance.

This runs `make demo-quick`'s own command (the shipped demo config, Patchcore cells only,
full demo sizes), so a wiring bug - masks misaligned with images, an inverted anomaly
map - fails here, and so does a demo-quick target that drifted from the config.
"""

from __future__ import annotations

import json
import shlex

import pytest
from conftest import REPO
from typer.testing import CliRunner

from adrun.cli import app


def make_recipe(target: str) -> list[str]:
    """The adrun arguments of ``target``'s recipe in the Makefile."""
    lines = (REPO / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    command = next(line for line in lines[start + 1 :] if "$(BIN)/adrun " in line)
    return shlex.split(command.split("$(BIN)/adrun ", 1)[1])


@pytest.mark.slow
def test_demo_quick_patchcore_is_well_above_chance(tmp_path):
    args = make_recipe("demo-quick")
    assert args[:2] == ["sweep", "configs/demo.yaml"]
    result = CliRunner().invoke(app, [args[0], str(REPO / args[1]), *args[2:], "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    exp = tmp_path / "demo-quick"
    records = [json.loads(p.read_text()) for p in sorted(exp.glob("runs/**/record.json"))]
    assert sorted((r["label"], r["category"]) for r in records) == [
        ("patchcore", "grid"),
        ("patchcore", "leather"),
        ("patchcore", "tile"),
    ]
    for record in records:
        assert record["metrics"]["pixel_AUROC"] >= 0.8, (record["category"], record["metrics"])
        assert record["metrics"]["image_AUROC"] >= 0.7, (record["category"], record["metrics"])
    md = (exp / "pixel_auroc.md").read_text().splitlines()
    assert md[0] == "# pixel AUROC: demo-quick"  # the title line names the metric and the experiment
    rows = [line.split(" | ")[0] for line in md if line.startswith("| ")][1:]  # after the header row
    assert rows == ["| tile", "| leather", "| grid", "| **mean**"]
