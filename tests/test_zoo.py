"""anomalib's model zoo through adrun: configs/zoo.yaml runs every offline model, and the specs' rules hold.

The smoke sweep goes through the real CLI; the rest checks each spec's config rules,
checks and builds without fitting (tiny sizes, no network).
"""

from __future__ import annotations

import json
import socket
import time

import pytest
import yaml
from conftest import CONFIGS
from typer.testing import CliRunner

from adrun.cli import app
from adrun.config import load_experiment, validate
from adrun.errors import AdrunError, ConfigError
from adrun.models import SPECS

# Models whose anomalib evaluator has no pixel metric: their tables say n/a, not a number.
IMAGE_ONLY = {"dfkde", "ganomaly"}
ZOO = CONFIGS / "zoo.yaml"


@pytest.mark.slow
def test_the_zoo_smoke_sweep_runs_every_model_with_a_pixel_auroc_or_an_explicit_na(tmp_path):
    """Every model on every category of zoo.yaml, as `adrun sweep configs/zoo.yaml --smoke` runs it."""
    raw = yaml.safe_load(ZOO.read_text())
    start = time.perf_counter()
    result = CliRunner().invoke(app, ["sweep", str(ZOO), "--smoke", "--output", str(tmp_path)])
    seconds = time.perf_counter() - start
    assert result.exit_code == 0, result.output
    # The console line says n/a for an image-only model's pixel AUROC, as the tables do.
    assert "ok   ganomaly / tile: pixel_AUROC n/a  image_AUROC " in result.output
    exp = tmp_path / "smoke" / "zoo"
    records = [json.loads(p.read_text()) for p in sorted(exp.glob("runs/*/*/seed-*/record.json"))]
    categories = raw["data"]["categories"]
    labels = [m["name"] for m in raw["models"]]
    assert len(records) == len(labels) * len(categories)
    assert all(r["status"] == "success" and r["smoke"] is True for r in records), [
        (r["label"], r["category"], r["error"]) for r in records if r["status"] != "success"
    ]
    for r in records:
        if r["label"] in IMAGE_ONLY:
            assert "pixel_AUROC" not in r["metrics"]
            assert r["samples"] is None and "image scores only" in r["samples_error"]
        else:
            assert 0.0 <= r["metrics"]["pixel_AUROC"] <= 1.0, r["label"]
            # The grid, drawn from the test's own batches (no second pass through the model).
            assert r["samples"] == "samples.png", (r["label"], r["samples_error"])
        assert 0.0 <= r["metrics"]["image_AUROC"] <= 1.0
    table = (exp / "pixel_auroc.md").read_text().splitlines()
    header = [c.strip() for c in table[2].strip("|").split("|")]
    assert header == ["category", *labels]
    for category in [*categories, "**mean**"]:
        row = next(line for line in table if line.startswith(f"| {category} |"))
        cells = dict(zip(header, (c.strip() for c in row.strip("|").split("|")), strict=True))
        assert {label for label in labels if cells[label] == "n/a"} == IMAGE_ONLY
        assert "–" not in cells.values()
    assert "n/a: the run succeeded but gives no pixel AUROC" in "\n".join(table)
    print(f"zoo smoke sweep: {len(records)} cells in {seconds:.0f} s")


def test_adrun_models_lists_at_least_fifteen_models():
    assert len(SPECS) >= 15  # patchcore, efficient_ad and the zoo's thirteen; see test_models for each entry
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0
    assert result.output.count("  offline: ") == len(SPECS)


# Specs configs/zoo.yaml leaves out, each for a stated reason (its header comment says so too).
NOT_IN_ZOO = {
    "vlm_ad": "listed only: needs a vision-language model server or weights",
    "winclip": "a random 208M-parameter CLIP takes minutes per cell on 2 CPU cores",
}


def test_the_zoo_config_names_every_offline_spec_once():
    experiment = load_experiment(ZOO)
    names = [m.name for m in experiment.models]
    assert sorted(names) == sorted(set(SPECS) - set(NOT_IN_ZOO)) and len(set(names)) == len(names)
    header = ZOO.read_text().split("\nname:")[0]
    assert all(name in header for name in NOT_IN_ZOO)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "cflow", "image_size": 64}, "models.0.image_size: must be at least 128"),
        ({"name": "supersimplenet", "image_size": 96}, "models.0.image_size: must be at least 128"),
        ({"name": "padim", "image_size": 48}, "models.0.image_size: must be at least 64"),
        ({"name": "padim", "backbone": "resnet50"}, "n_features has no default for backbone resnet50"),
        ({"name": "fastflow", "backbone": "resnet50"}, "fastflow supports backbone resnet18"),
        ({"name": "reverse_distillation", "backbone": "vgg16"}, "anomalib has a decoder only for resnet18"),
        ({"name": "uflow", "image_size": 64}, "backbone mcait runs at image_size: 448 only"),
        ({"name": "stfpm", "pre_trained": False, "weights": "w.pth"}, "contradicts pre_trained: false"),
    ],
)
def test_a_models_config_rules_refuse_bad_entries_with_the_fix(entry, message):
    with pytest.raises(ConfigError) as caught:
        validate({"name": "x", "models": [entry]})
    assert message in str(caught.value)


def _plan_problems(tmp_path, entry, smoke=False, **data):
    from adrun.sweep import plan

    raw = {
        "name": "x",
        "output": str(tmp_path),
        "models": [entry],
        "data": {"format": "synthetic", "categories": ["tile"], **data},
        "trainer": {"accelerator": "cpu"},
    }
    try:
        plan(validate(raw), smoke=smoke)
    except AdrunError as exc:
        return str(exc)
    return ""


@pytest.mark.parametrize(
    ("entry", "data", "smoke", "expected"),
    [
        ({"name": "stfpm"}, {}, False, "stfpm trains until a schedule ends and none is set"),
        ({"name": "stfpm", "trainer": {"max_steps": 0}}, {}, False, "trainer.max_steps is 0"),
        ({"name": "stfpm", "trainer": {"max_epochs": -1}}, {}, False, "stfpm trains until a schedule ends"),
        ({"name": "padim", "trainer": {"max_epochs": 3}}, {}, False, "padim trains 1 epoch(s)"),
        ({"name": "stfpm", "pre_trained": False, "trainer": {"max_epochs": -1, "max_steps": 5}}, {}, False, ""),
        (
            {"name": "dfkde"},
            {"synthetic": {"n_train": 8}},
            False,
            "dfkde needs more training images than n_pca_components (16) and this cell has 8",
        ),
        ({"name": "dfkde", "n_pca_components": 4}, {}, True, "this cell has 4; set n_pca_components: 3"),
        (
            {"name": "cflow", "image_size": 128, "train_batch_size": 2, "trainer": {"max_steps": 1}},
            {},
            False,
            "a batch of 2 at 128 px gives 32 at stride 32",
        ),
        (
            {"name": "fre", "backbone": "resnet18", "image_size": 64, "trainer": {"max_epochs": 1}},
            {},
            False,
            "fre's input_dim 65536 does not match the pooled features of resnet18 layer3 at 64 px (1024)",
        ),
        ({"name": "stfpm", "pre_trained": False, "trainer": {"max_epochs": 2}}, {}, False, ""),
        ({"name": "padim", "pre_trained": False}, {}, True, ""),
        # Preflight names the file to fetch for a hard-coded pretrained teacher (offline tests).
        (
            {"name": "stfpm", "trainer": {"max_epochs": 2}},
            {},
            False,
            "stfpm: timm's pretrained weights for resnet18 are not in the Hugging Face cache",
        ),
        (
            {"name": "draem", "dtd_dir": "no/such/dtd", "trainer": {"max_epochs": 2}},
            {},
            False,
            "draem: dtd_dir no/such/dtd does not exist (anomalib would download DTD into it)",
        ),
        (
            {"name": "cfa", "trainer": {"max_epochs": 2}},
            {},
            False,
            "cfa: torchvision's wide_resnet50_2 weights are not at",
        ),
    ],
)
def test_a_models_cell_rules_refuse_the_cell_before_it_runs(tmp_path, entry, data, smoke, expected):
    problems = _plan_problems(tmp_path, entry, smoke, **data)
    assert (expected in problems) if expected else problems == "", problems


# --------------------------------------------------------------------------- weights


def _resnet18_file(tmp_path, value=0.125):
    import timm
    import torch

    state = timm.create_model("resnet18", pretrained=False).state_dict()
    state["conv1.weight"] = torch.full_like(state["conv1.weight"], value)
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    return path


# Where each model's backbone conv1 sits once built (the spec's backbone_at, then timm's net).
CONV1 = {
    "padim": "model.feature_extractor.feature_extractor.conv1",
    "stfpm": "model.teacher_model.feature_extractor.conv1",
    "fastflow": "model.feature_extractor.conv1",
    "reverse_distillation": "model.encoder.feature_extractor.conv1",
    "dfm": "model.feature_extractor.feature_extractor.conv1",
    "dfkde": "model.feature_extractor.feature_extractor.conv1",
    "cflow": "model.encoder.feature_extractor.conv1",
    "uflow": "model.feature_extractor.feature_extractor.conv1",
    "supersimplenet": "model.feature_extractor.feature_extractor.feature_extractor.conv1",
    "cfa": "model.feature_extractor.conv1",
    "fre": "model.feature_extractor.feature_extractor.conv1",
}


def _build(tmp_path, entry):
    from functools import reduce

    from adrun.models import spec

    cfg = validate({"name": "x", "models": [entry]}).models[0]
    model = spec(cfg.name).build(cfg, tmp_path, False)
    return model, lambda path: reduce(getattr, path.split("."), model)


@pytest.mark.parametrize("name", sorted(CONV1))
def test_weights_file_loads_into_the_backbone_without_the_network(tmp_path, monkeypatch, name):
    """Also for backbones anomalib hard-codes as pretrained: built untrained, then the file (weights_only)."""

    def no_network(*args, **kwargs):
        raise AssertionError("network touched")

    monkeypatch.setattr(socket, "create_connection", no_network)
    entry = {
        "name": name,
        "backbone": "resnet18",
        "weights": str(_resnet18_file(tmp_path)),
        "image_size": 128 if name in ("cflow", "supersimplenet") else 64,
    }
    if name == "fre":
        entry["input_dim"] = 1024
    model, at = _build(tmp_path, entry)
    assert float(at(CONV1[name]).weight.flatten()[0]) == 0.125
    assert float(at(CONV1[name]).weight.std()) == 0.0
    record = SPECS[name].sources(model_cfg := validate({"name": "x", "models": [entry]}).models[0])
    assert record == {"backbone": f"file {model_cfg.weights.resolve()}"}


@pytest.mark.parametrize("name", ["stfpm", "uflow", "supersimplenet", "cfa"])
def test_pre_trained_false_builds_a_hard_coded_pretrained_backbone_offline(tmp_path, name):
    # conftest makes the hub offline with an empty cache: a pretrained build would raise.
    model, at = _build(
        tmp_path,
        {
            "name": name,
            "backbone": "resnet18",
            "pre_trained": False,
            "image_size": 128 if name == "supersimplenet" else 64,
        },
    )
    assert float(at(CONV1[name]).weight.std()) > 0  # random init, not a constant


def test_cfa_loads_torchvisions_cached_file_itself_with_weights_only(tmp_path):
    import torch
    import torchvision

    from adrun.models.cfa import hub_file

    path = hub_file("resnet18")[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    state = torchvision.models.resnet18(weights=None).state_dict()
    state["conv1.weight"] = torch.full_like(state["conv1.weight"], 0.25)
    torch.save(state, path)
    model, at = _build(tmp_path, {"name": "cfa", "backbone": "resnet18", "image_size": 64})
    assert float(at(CONV1["cfa"]).weight.flatten()[0]) == 0.25
    # A pickle that is not a plain state dict is refused, never unpickled by torchvision.
    torch.save({"conv1.weight": object()}, path)
    with pytest.raises(AdrunError, match="cannot be read"):
        _build(tmp_path, {"name": "cfa", "backbone": "resnet18", "image_size": 64})


def test_draem_without_textures_builds_offline_from_an_empty_folder_of_its_own(tmp_path):
    model, _ = _build(tmp_path, {"name": "draem", "dtd_dir": None, "image_size": 64})
    folder = tmp_path / "draem-no-textures"
    assert folder.is_dir() and not any(folder.iterdir())
    assert (
        SPECS["draem"].downloads(validate({"name": "x", "models": [{"name": "draem"}]}).models[0])[0].present is False
    )
