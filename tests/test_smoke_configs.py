"""Every shipped config runs with --smoke against synthetic data.

Smoke never changes where weights come from, so this offline suite swaps the weight
sources explicitly (untrained backbone, random teacher, built-in photos), the same
--set lines a user without network would write.
"""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import CONFIGS
from typer.testing import CliRunner

from adrun.cli import app
from adrun.config import load_experiment

OFFLINE = {
    "patchcore": ["pre_trained=false"],
    "efficient_ad": ["teacher=random", "imagenet_dir=builtin"],
}


@pytest.mark.slow
# configs/zoo.yaml is offline already and has image-only models: tests/test_zoo.py smoke-runs it whole.
@pytest.mark.parametrize("path", sorted(p for p in CONFIGS.glob("*.yaml") if p.stem != "zoo"), ids=lambda p: p.stem)
def test_shipped_config_smoke_runs(path, tmp_path):
    raw = yaml.safe_load(path.read_text())
    sets = [
        "data.format=synthetic",
        "data.root=null",
        "data.categories=[tile]",
        "data.num_workers=0",
        "data.synthetic.image_size=64",
        "trainer.accelerator=cpu",
    ]
    for i, model in enumerate(raw["models"]):
        sets += [f"models.{i}.{s}" for s in OFFLINE[model["name"]]]
        if model["name"] == "patchcore":
            sets += [f"models.{i}.image_size=64", f"models.{i}.center_crop=null"]
    args = ["sweep", str(path), "--smoke", "--output", str(tmp_path)]
    for s in sets:
        args += ["--set", s]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    exp = tmp_path / "smoke" / raw["name"]
    records = sorted(exp.glob("runs/*/tile/seed-*/record.json"))
    seeds = load_experiment(path).seed_values()
    assert len(records) == len(raw["models"]) * len(seeds)
    assert {json.loads(p.read_text())["seed"] for p in records} == set(seeds)
    for record in map(json.loads, (p.read_text() for p in records)):
        assert record["status"] == "success" and record["smoke"] is True
        assert 0.0 <= record["metrics"]["pixel_AUROC"] <= 1.0
    assert (exp / "pixel_auroc.md").read_text().count("| tile |") == 1
