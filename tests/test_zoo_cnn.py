"""anomalib's CNN models beyond the first fifteen (csflow, ...): each through the real CLI, offline.

Per model: its configs/zoo.yaml entry runs as a smoke cell on tile and records a pixel AUROC,
a missing weights or data file stops the sweep with one line naming it (exit 2), and an
untrained backbone builds without the network.
"""

from __future__ import annotations

import json
import re
import socket
from functools import reduce

import pytest
import yaml
from conftest import CONFIGS, run_path, write_yaml
from typer.testing import CliRunner

from adrun.cli import app
from adrun.config import validate
from adrun.errors import AdrunError
from adrun.models import SPECS, spec

ZOO = CONFIGS / "zoo.yaml"
runner = CliRunner()


def _zoo_raw(tmp_path, name: str, **update) -> dict:
    """configs/zoo.yaml with only ``name``'s entry (updated), on tile, writing under tmp_path."""
    raw = yaml.safe_load(ZOO.read_text())
    raw["models"] = [{**m, **update} for m in raw["models"] if m["name"] == name]
    assert len(raw["models"]) == 1, name
    raw["output"] = str(tmp_path / "results")
    raw["data"]["categories"] = ["tile"]
    return raw


def _smoke(tmp_path, name: str) -> dict:
    config = write_yaml(tmp_path / "zoo.yaml", _zoo_raw(tmp_path, name))
    result = runner.invoke(app, ["sweep", str(config), "--smoke"])
    assert result.exit_code == 0, result.output
    record = json.loads((run_path(tmp_path / "results" / "smoke" / "zoo", name, "tile") / "record.json").read_text())
    assert record["status"] == "success" and record["smoke"] is True, record["error"]
    assert 0.0 <= record["metrics"]["image_AUROC"] <= 1.0
    return record


def _refused(tmp_path, name: str, **update) -> str:
    """The sweep's one-line refusal (exit 2, no traceback, no cell run) for ``name``'s zoo entry updated."""
    config = write_yaml(tmp_path / "zoo.yaml", _zoo_raw(tmp_path, name, **update))
    result = runner.invoke(app, ["sweep", str(config), "--smoke"])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output, result.output
    assert not (tmp_path / "results" / "smoke" / "zoo" / "runs").exists()
    return result.output.strip()


def _build(tmp_path, entry: dict):
    cfg = validate({"name": "x", "models": [entry]}).models[0]
    model = spec(cfg.name).build(cfg, tmp_path, False)
    return model, lambda path: reduce(getattr, path.split("."), model)


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network touched")

    monkeypatch.setattr(socket, "create_connection", refuse)


# --------------------------------------------------------------------------- csflow

CSFLOW = {"name": "csflow", "image_size": 128, "cross_conv_hidden_channels": 16, "n_coupling_blocks": 1}
# CS-Flow's EfficientNet-B5 stem conv, once built (anomalib's TimmFeatureExtractor over torchvision's net).
CSFLOW_STEM = "model.feature_extractor.feature_extractor.feature_extractor.features.0.0"


@pytest.mark.slow
def test_csflow_smoke_cell_runs_on_tile_with_an_untrained_efficientnet(tmp_path):
    record = _smoke(tmp_path, "csflow")
    assert 0.0 <= record["metrics"]["pixel_AUROC"] <= 1.0
    assert record["weights"] == {"backbone": "untrained (pre_trained: false)"}


def test_csflow_pretrained_without_the_cached_file_is_refused_naming_it(tmp_path):
    from adrun.models.cfa import hub_file

    line = _refused(tmp_path, "csflow", pre_trained=True)
    assert line.startswith(
        f"adrun: error: csflow: torchvision's efficientnet_b5 weights are not at {hub_file('efficientnet_b5')[1]}; "
    )
    assert "adrun fetch" in line and "set weights: FILE or pre_trained: false" in line


def test_csflow_missing_weights_file_is_refused_naming_it(tmp_path):
    missing = tmp_path / "b5.pth"
    line = _refused(tmp_path, "csflow", pre_trained=True, weights=str(missing))
    assert line == f"adrun: error: csflow: weights file {missing} does not exist; set weights: on that model entry"


def test_csflow_pre_trained_false_builds_untrained_without_the_network(tmp_path, no_network):
    from adrun.models.cfa import hub_file

    entry = {**CSFLOW, "pre_trained": False}
    _, at = _build(tmp_path, entry)
    assert float(at(CSFLOW_STEM).weight.std()) > 0  # random init, not a constant
    sources = SPECS["csflow"].sources
    assert sources(validate({"name": "x", "models": [entry]}).models[0]) == {
        "backbone": "untrained (pre_trained: false)"
    }
    assert sources(validate({"name": "x", "models": [CSFLOW]}).models[0]) == {
        "backbone": f"torchvision efficientnet_b5 DEFAULT, file {hub_file('efficientnet_b5')[1]} (weights_only)"
    }


def test_csflow_loads_a_weights_file_and_the_cached_file_itself_with_weights_only(tmp_path, no_network):
    import torch
    import torchvision

    from adrun.models.cfa import hub_file

    state = torchvision.models.efficientnet_b5(weights=None).state_dict()
    state["features.0.0.weight"] = torch.full_like(state["features.0.0.weight"], 0.125)
    path = tmp_path / "b5.pth"
    torch.save(state, path)
    entry = {**CSFLOW, "weights": str(path)}
    _, at = _build(tmp_path, entry)
    assert float(at(CSFLOW_STEM).weight.flatten()[0]) == 0.125 and float(at(CSFLOW_STEM).weight.std()) == 0.0
    assert SPECS["csflow"].sources(validate({"name": "x", "models": [entry]}).models[0]) == {
        "backbone": f"file {path.resolve()}"
    }
    # pre_trained: true reads torchvision's own cache file, through adrun's weights_only loader.
    cached = hub_file("efficientnet_b5")[1]
    cached.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"features.0.0.weight": object()}, cached)  # a pickle, not a state dict: refused
    with pytest.raises(AdrunError, match="cannot be read"):
        _build(tmp_path, CSFLOW)
    state["features.0.0.weight"] = torch.full_like(state["features.0.0.weight"], 0.25)
    torch.save(state, cached)
    _, at = _build(tmp_path, CSFLOW)
    assert float(at(CSFLOW_STEM).weight.flatten()[0]) == 0.25


@pytest.mark.parametrize("size", [64, 160])
def test_csflow_refuses_an_image_size_its_scales_do_not_fit(size):
    from adrun.errors import ConfigError

    with pytest.raises(ConfigError, match="image_size: must be"):
        validate({"name": "x", "models": [{"name": "csflow", "image_size": size}]})


# --------------------------------------------------------------------------- dsr

DSR = {"name": "dsr", "image_size": 64}


def _vq_file(tmp_path, value=0.125):
    import torch
    from anomalib.models.image.dsr.torch_model import DiscreteLatentModel

    net = DiscreteLatentModel(
        num_hiddens=128, num_residual_layers=2, num_residual_hiddens=64, num_embeddings=4096, embedding_dim=128
    )
    state = net.state_dict()
    key = next(k for k in state if k.endswith("weight"))
    state[key] = torch.full_like(state[key], value)
    path = tmp_path / "vq_model_pretrained_128_4096.pckl"
    torch.save(state, path)
    return path, key


@pytest.mark.slow
def test_dsr_smoke_cell_runs_on_tile_with_a_random_vq_model(tmp_path):
    record = _smoke(tmp_path, "dsr")
    assert 0.0 <= record["metrics"]["pixel_AUROC"] <= 1.0
    assert record["weights"] == {"vq_model": "random (smoke only)"}


def test_dsr_without_the_cached_vq_model_is_refused_naming_the_file_and_where_to_get_it(tmp_path):
    from adrun.models.dsr import VQ_URL, cached_file

    line = _refused(tmp_path, "dsr", vq_model="auto")
    assert line.startswith(
        "adrun: error: dsr: DSR's pretrained VQ model vq_model_pretrained_128_4096.pckl is not in anomalib's cache "
        f"{cached_file().parent} (anomalib would download it from {VQ_URL}); "
    )
    assert "adrun fetch" in line and "set vq_model: FILE, or vq_model: random for smoke runs only" in line
    # `adrun fetch` would download exactly that file there; nothing is downloaded here.
    cfg = validate({"name": "x", "models": [{"name": "dsr"}]}).models[0]
    [download] = SPECS["dsr"].downloads(cfg)
    assert (download.name, download.target, download.present) == (
        "vq_model_pretrained_128_4096.pckl",
        cached_file().parent,
        False,
    )


def test_dsr_missing_or_pickled_vq_file_is_refused_naming_it(tmp_path):
    import torch

    missing = tmp_path / "vq.pckl"
    line = _refused(tmp_path, "dsr", vq_model=str(missing))
    assert line == (
        f"adrun: error: dsr: DSR's VQ model file {missing} does not exist; set vq_model: on that model entry"
    )
    torch.save({"weight": object()}, missing)  # needs unpickling: refused, never loaded
    line = _refused(tmp_path, "dsr", vq_model=str(missing))
    assert line.startswith(f"adrun: error: dsr: DSR's VQ model file {missing} cannot be read (UnpicklingError")
    assert "adrun reads it with weights_only=True and never unpickles" in line


def test_dsr_random_vq_model_builds_offline_and_never_downloads(tmp_path, no_network):
    entry = {**DSR, "vq_model": "random"}
    model, _ = _build(tmp_path, entry)
    assert model.vq_state is None
    with pytest.raises(RuntimeError, match="never downloads"):
        model.prepare_pretrained_model()
    cfg = validate({"name": "x", "models": [entry]}).models[0]
    assert SPECS["dsr"].downloads(cfg) == []
    assert SPECS["dsr"].sources(cfg) == {"vq_model": "random (smoke only)"}
    assert "fit for smoke tests only" in SPECS["dsr"].notes(cfg)[0]


def test_dsr_vq_file_is_read_weights_only_and_loaded_when_training_starts(tmp_path, no_network):
    path, key = _vq_file(tmp_path)
    entry = {**DSR, "vq_model": str(path)}
    model, at = _build(tmp_path, entry)
    weight = at(f"model.discrete_latent_model.{key}")
    assert float(weight.std()) > 0  # still the random init until training starts
    model.on_train_start()
    assert float(weight.flatten()[0]) == 0.125 and float(weight.std()) == 0.0
    cfg = validate({"name": "x", "models": [entry]}).models[0]
    assert SPECS["dsr"].sources(cfg) == {"vq_model": f"file {path.resolve()} (weights_only)"}
    assert SPECS["dsr"].checks(cfg, "dsr", None)["vq_model"].ok


# --------------------------------------------------------------------------- glass

GLASS = {
    "name": "glass",
    "backbone": "resnet18",
    "image_size": 64,
    "pretrain_embed_dim": 64,
    "target_embed_dim": 64,
    "discriminator_hidden": 64,
}
GLASS_CONV1 = "model.forward_modules.feature_aggregator.feature_extractor.conv1"


@pytest.mark.slow
def test_glass_smoke_cell_runs_on_tile_without_textures(tmp_path):
    record = _smoke(tmp_path, "glass")
    assert 0.0 <= record["metrics"]["pixel_AUROC"] <= 1.0
    assert record["weights"] == {"backbone": "untrained (pre_trained: false)", "textures": "none (Perlin noise)"}
    # anomalib's published GLASS numbers beside it (scripts/make_references.py, glass/README.md).
    result = runner.invoke(app, ["table", str(tmp_path / "results" / "smoke" / "zoo"), "--compare", "anomalib"])
    assert result.exit_code == 0, result.output
    assert f"| tile | {record['metrics']['pixel_AUROC']:.3f} | 0.992 |" in result.output


def test_glass_missing_textures_or_weights_are_refused_naming_them(tmp_path):
    missing = tmp_path / "dtd"
    line = _refused(tmp_path, "glass", anomaly_source_path=str(missing))
    assert line.startswith(
        f"adrun: error: glass: anomaly_source_path {missing} does not exist (anomalib would download DTD into it); "
    )
    assert line.endswith("or set anomaly_source_path: null (Perlin noise only) on that model entry")
    weights = tmp_path / "r18.pth"
    line = _refused(tmp_path, "glass", pre_trained=True, weights=str(weights))
    assert line == f"adrun: error: glass: weights file {weights} does not exist; set weights: on that model entry"
    line = _refused(tmp_path, "glass", pre_trained=True)
    assert line.startswith("adrun: error: glass: timm's pretrained weights for resnet18 are not in the Hugging Face")
    cfg = validate({"name": "x", "models": [{**GLASS, "anomaly_source_path": str(missing)}]}).models[0]
    assert [(d.kind, d.target, d.present) for d in SPECS["glass"].downloads(cfg)] == [
        ("backbone", SPECS["glass"].downloads(cfg)[0].target, False),
        ("textures", missing, False),
    ]


def test_glass_pre_trained_false_builds_a_frozen_untrained_backbone_without_the_network(tmp_path, no_network):
    model, at = _build(tmp_path, {**GLASS, "pre_trained": False})
    conv1 = at(GLASS_CONV1)
    assert float(conv1.weight.std()) > 0  # random init, not a constant
    # anomalib's frozen-backbone path: its pre_trained=False one (train the backbone) fails in 2.7.
    # (anomalib runs a pre_trained backbone under no_grad and gives it no optimizer.)
    assert model.pre_trained is True and model.model.pre_trained is True
    assert len(model.configure_optimizers()) == 2  # discriminator and projection, no backbone


def test_glass_loads_a_weights_file_without_the_network(tmp_path, no_network):
    import timm
    import torch

    state = timm.create_model("resnet18", pretrained=False).state_dict()
    state["conv1.weight"] = torch.full_like(state["conv1.weight"], 0.125)
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    entry = {**GLASS, "weights": str(path)}
    _, at = _build(tmp_path, entry)
    assert float(at(GLASS_CONV1).weight.flatten()[0]) == 0.125 and float(at(GLASS_CONV1).weight.std()) == 0.0
    assert SPECS["glass"].sources(validate({"name": "x", "models": [entry]}).models[0]) == {
        "backbone": f"file {path.resolve()}",
        "textures": "none (Perlin noise)",
    }


# --------------------------------------------------------------------------- uninet

UNINET = {"name": "uninet", "student_backbone": "resnet50", "teacher_backbone": "resnet50", "image_size": 64}


@pytest.mark.slow
def test_uninet_smoke_cell_runs_on_tile_with_untrained_resnet50_teachers(tmp_path):
    record = _smoke(tmp_path, "uninet")
    assert 0.0 <= record["metrics"]["pixel_AUROC"] <= 1.0
    assert record["weights"] == {"backbone": "untrained (pre_trained: false)"}


def test_uninet_missing_teacher_weights_are_refused_naming_the_file(tmp_path):
    from adrun.models.cfa import hub_file

    line = _refused(tmp_path, "uninet", pre_trained=True)
    assert line.startswith(
        f"adrun: error: uninet: torchvision's resnet50 weights are not at {hub_file('resnet50')[1]}; "
    )
    missing = tmp_path / "r50.pth"
    line = _refused(tmp_path, "uninet", pre_trained=True, weights=str(missing))
    assert line == f"adrun: error: uninet: weights file {missing} does not exist; set weights: on that model entry"


def test_uninet_teachers_build_untrained_or_from_a_file_without_the_network(tmp_path, no_network):
    import torch
    import torchvision

    _, at = _build(tmp_path, {**UNINET, "pre_trained": False})
    assert float(at("model.teachers.source_teacher.conv1").weight.std()) > 0  # random init
    state = torchvision.models.resnet50(weights=None).state_dict()
    state["conv1.weight"] = torch.full_like(state["conv1.weight"], 0.125)
    path = tmp_path / "r50.pth"
    torch.save(state, path)
    entry = {**UNINET, "weights": str(path)}
    _, at = _build(tmp_path, entry)
    for teacher in ("source_teacher", "target_teacher"):
        weight = at(f"model.teachers.{teacher}.conv1").weight
        assert float(weight.flatten()[0]) == 0.125 and float(weight.std()) == 0.0
    assert SPECS["uninet"].sources(validate({"name": "x", "models": [entry]}).models[0]) == {
        "backbone": f"file {path.resolve()}"
    }


def test_uninet_refuses_a_teacher_its_bottleneck_does_not_fit():
    from adrun.errors import ConfigError

    with pytest.raises(ConfigError, match="teacher_backbone"):
        validate({"name": "x", "models": [{"name": "uninet", "teacher_backbone": "resnet18"}]})


# --------------------------------------------------------------------------- mh_patchcore

MH = {"name": "mh_patchcore", "backbone": "resnet18", "image_size": 224}


@pytest.mark.slow
def test_mh_patchcore_smoke_cell_runs_its_three_passes_on_tile(tmp_path):
    """--smoke's max_steps would stop the fit before its memory-bank pass; the record shows it ran through."""
    record = _smoke(tmp_path, "mh_patchcore")
    assert 0.0 <= record["metrics"]["pixel_AUROC"] <= 1.0
    assert record["weights"] == {"backbone": "untrained (pre_trained: false)"}


def test_mh_patchcore_missing_weights_are_refused_naming_them(tmp_path):
    line = _refused(tmp_path, "mh_patchcore", pre_trained=True)
    assert line.startswith("adrun: error: mh_patchcore: timm's pretrained weights for resnet18 are not in the Hugging")
    missing = tmp_path / "r18.pth"
    line = _refused(tmp_path, "mh_patchcore", pre_trained=True, weights=str(missing))
    assert line.startswith(f"adrun: error: mh_patchcore: weights file {missing} ")


def test_mh_patchcore_builds_untrained_or_from_a_file_without_the_network(tmp_path, no_network):
    import timm
    import torch

    model, at = _build(tmp_path, {**MH, "pre_trained": False})
    conv1 = "model.feature_extractor.feature_extractor.conv1"
    assert float(at(conv1).weight.std()) > 0  # random init
    # Its three fitting passes are not cut by a step limit (--smoke's max_steps).
    assert model.trainer_arguments["max_epochs"] == 3 and model.trainer_arguments["max_steps"] == -1
    state = timm.create_model("resnet18", pretrained=False).state_dict()
    state["conv1.weight"] = torch.full_like(state["conv1.weight"], 0.125)
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    _, at = _build(tmp_path, {**MH, "weights": str(path)})
    assert float(at(conv1).weight.flatten()[0]) == 0.125 and float(at(conv1).weight.std()) == 0.0


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({**MH, "image_size": 128}, "models.0.image_size: must be at least 224"),
        ({**MH, "pre_trained": False, "trainer": {"max_epochs": 2}}, "mh_patchcore trains 3 epoch(s)"),
    ],
)
def test_mh_patchcore_refuses_a_size_below_its_crop_and_a_changed_epoch_count(tmp_path, entry, message):
    from adrun.sweep import plan

    raw = {
        "name": "x",
        "output": str(tmp_path),
        "models": [entry],
        "data": {"format": "synthetic", "categories": ["tile"]},
    }
    with pytest.raises(AdrunError, match=re.escape(message)):
        plan(validate(raw))


# --------------------------------------------------------------------------- references


@pytest.mark.parametrize(
    ("entry", "variant"),
    [
        ({"name": "csflow", "image_size": 256}, "EfficientNet-B5 256 px"),
        ({"name": "glass"}, "Wide ResNet-50"),
        ({"name": "uninet"}, "UniNet"),
        ({"name": "mh_patchcore"}, "MH-PatchCore"),
    ],
)
def test_compare_anomalib_picks_the_published_rows_for_each_new_models_defaults(entry, variant):
    """Their READMEs' MVTec AD tables are already parsed by scripts/make_references.py; DSR's README has none."""
    from adrun import compare

    ref = compare.load("anomalib")
    config = validate({"name": "x", "models": [entry]}).models[0].model_dump(mode="json")
    assert compare.pick_variant(ref, entry["name"], config, "image_AUROC") == (variant, True)
    assert compare.pick_variant(ref, "dsr", {}, "image_AUROC") == (None, False)
