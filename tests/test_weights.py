"""Local weight files: the backbone gets exactly the file's tensors; bad files are one clear error.

Weight files are made here: the state dict of a randomly initialised timm backbone
(resnet18 keeps them small), saved to tmp_path. Nothing is downloaded.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_raw, write_yaml
from typer.testing import CliRunner

from adrun.cli import app
from adrun.config import load_experiment
from adrun.errors import ConfigError, WeightsError

runner = CliRunner()


def timm_state(name: str = "resnet18", seed: int = 0) -> dict[str, torch.Tensor]:
    import timm

    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False).state_dict()


def save(state: dict, path):
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


def patchcore(weights, backbone: str = "resnet18"):
    from adrun.models.patchcore.lightning import AdrunPatchcore

    return AdrunPatchcore(backbone=backbone, layers=["layer2", "layer3"], weights=weights, visualizer=False)


def assert_backbone_equals(model, state: dict) -> None:
    loaded = model.model.feature_extractor.feature_extractor.state_dict()
    assert loaded, "the features net has no tensors"
    for key, tensor in loaded.items():
        assert torch.equal(tensor, state[key]), key


@pytest.fixture(scope="module")
def state():
    return timm_state(seed=1)


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".safetensors"])
def test_full_model_state_dict_is_loaded_into_the_features_net(state, tmp_path, suffix):
    path = save(state, tmp_path / f"resnet18{suffix}")
    model = patchcore(path)
    assert_backbone_equals(model, state)
    # A random init would not match: the file really replaced the weights.
    fresh = timm_state(seed=2)
    assert not torch.equal(fresh["conv1.weight"], model.model.feature_extractor.feature_extractor.conv1.weight)


def test_wrapped_prefixed_and_features_only_dicts_are_accepted(state, tmp_path):
    wrapped = save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "wrapped.pth")
    assert_backbone_equals(patchcore(wrapped), state)
    import timm

    torch.manual_seed(3)
    features = timm.create_model("resnet18", features_only=True, exportable=True, out_indices=[2, 3]).state_dict()
    model = patchcore(save(features, tmp_path / "features.pth"))
    assert_backbone_equals(model, features)


def test_classifier_of_another_size_is_ignored(state, tmp_path):
    # Users fine-tune for their own classes; features never use the classifier.
    other = {**state, "fc.weight": torch.zeros(10, 512), "fc.bias": torch.zeros(10)}
    assert_backbone_equals(patchcore(save(other, tmp_path / "ten.pth")), state)


def test_other_architecture_is_a_clear_error(tmp_path):
    path = save(timm_state("resnet34"), tmp_path / "resnet34.pth")
    with pytest.raises(WeightsError) as info:
        patchcore(path)
    message = str(info.value)
    assert message.startswith(f"weights file {path} does not fit backbone resnet18: ")
    assert "unexpected keys (e.g. layer1.2." in message
    assert "timm.create_model('resnet18')" in message and "\n" not in message


def test_shape_mismatch_names_the_tensor(tmp_path):
    path = save(timm_state("resnet50"), tmp_path / "resnet50.pth")
    with pytest.raises(
        WeightsError, match=r"shape mismatches \(e\.g\. layer1\.0\.conv1\.weight \(file \[64, 64, 1, 1\]"
    ):
        patchcore(path)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_file_is_a_clear_error(state, tmp_path, suffix):
    path = save(state, tmp_path / f"whole{suffix}")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(WeightsError, match=rf"weights file {path} cannot be read \(.*\); it is truncated or not"):
        patchcore(path)


def test_not_a_state_dict_and_missing_file(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(WeightsError, match="holds no state dict"):
        patchcore(path)
    with pytest.raises(WeightsError, match="does not exist"):
        patchcore(tmp_path / "nowhere.pth")


def test_config_checks_weights_key():
    raw = {"name": "x", "models": [{"name": "patchcore"}]}
    experiment = load_experiment(raw=raw, overrides=["models.0.weights=/w/wrn50.safetensors"])
    assert str(experiment.models[0].weights) == "/w/wrn50.safetensors"
    with pytest.raises(ConfigError, match="models.0.weights: must be a .pth, .pt or .safetensors"):
        load_experiment(raw=raw, overrides=["models.0.weights=/w/wrn50.onnx"])
    with pytest.raises(ConfigError, match="models.0.weights: contradicts pre_trained: false"):
        load_experiment(raw=raw, overrides=["models.0.weights=/w/a.pth", "models.0.pre_trained=false"])


# --------------------------------------------------------------------------- EfficientAd teacher


def teacher_file(tmp_path, size: str):
    from anomalib.models.image.efficient_ad.torch_model import (
        MediumPatchDescriptionNetwork,
        SmallPatchDescriptionNetwork,
    )

    cls = SmallPatchDescriptionNetwork if size == "small" else MediumPatchDescriptionNetwork
    torch.manual_seed(4)
    state = cls(out_channels=384).state_dict()
    return save(state, tmp_path / f"pretrained_teacher_{size}.pth"), state


def test_teacher_file_is_loaded_and_the_wrong_size_named(tmp_path):
    from adrun.models.efficient_ad.lightning import AdrunEfficientAd
    from adrun.models.efficient_ad.teacher import load_teacher

    path, state = teacher_file(tmp_path, "small")
    model = AdrunEfficientAd(teacher=str(path), model_size="small", visualizer=False)
    load_teacher(model.model.teacher, path, model_size="small")
    for key, tensor in model.model.teacher.state_dict().items():
        assert torch.equal(tensor, state[key])
    medium = AdrunEfficientAd(teacher=str(path), model_size="medium", visualizer=False)
    with pytest.raises(
        WeightsError, match=r"does not fit model_size medium .*it is a small teacher: set model_size: small"
    ):
        load_teacher(medium.model.teacher, path, model_size="medium")


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_sweep_with_weights_file_runs_and_records_it(state, tmp_path):
    """Pretrained Patchcore, nothing cached, offline: runs when weights: names a local file."""
    path = save(state, tmp_path / "resnet18.safetensors")
    raw = tiny_raw(tmp_path / "results")
    raw["models"] = [raw["models"][0]]
    raw["models"][0].update(pre_trained=True, weights=str(path))
    result = runner.invoke(app, ["sweep", str(write_yaml(tmp_path / "w.yaml", raw))])
    assert result.exit_code == 0, result.output
    run = tmp_path / "results" / "tiny" / "runs" / "patchcore" / "tile" / "seed-42"
    record = json.loads((run / "record.json").read_text())
    assert record["status"] == "success"
    assert record["weights"] == {"backbone": f"file {path.resolve()}"}
    ckpt = torch.load(run / record["checkpoint"], map_location="cpu", weights_only=False)
    prefix = "model.feature_extractor.feature_extractor."
    saved = {k.removeprefix(prefix): v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    assert saved and all(torch.equal(v, state[k]) for k, v in saved.items())
    # `adrun test` and `export` read this checkpoint through the weights-only unpickler too.
    again = runner.invoke(app, ["test", str(run)])
    assert again.exit_code == 0, again.output
    retested = json.loads((run / "record.json").read_text())["metrics"]
    assert retested == pytest.approx(record["metrics"], abs=1e-6)
    exported = runner.invoke(app, ["export", str(run), "--format", "torch", "--output", str(tmp_path / "x")])
    assert exported.exit_code == 0, exported.output
