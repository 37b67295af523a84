"""The ViT and CLIP models of anomalib's zoo: weights that cannot exist offline are named, checked and fetched.

Each runnable model runs through the real CLI on one tiny synthetic category with an
untrained encoder (smoke quality) and with a weights file the test writes itself; a
missing encoder is refused before anything is built, in one line that names the file,
without touching the network; ``adrun fetch`` plans timm's own download (faked here).
"""

from __future__ import annotations

import json
import socket

import pytest
from conftest import tiny_raw, write_yaml
from typer.testing import CliRunner

from adrun.cli import app

# name -> (tiny entry, the timm encoder, its Hugging Face repo, the record's provenance key)
VIT = {
    "anomaly_dino": (
        {"name": "anomaly_dino", "image_size": 56},
        "vit_small_patch14_dinov2",
        "timm/vit_small_patch14_dinov2.lvd142m",
    ),
    # ViT-S instead of anomalib's ViT-B (both with registers): the smoke's size; 2 steps.
    "dinomaly": (
        {
            "name": "dinomaly",
            "encoder_name": "vit_small_patch14_reg4_dinov2",
            "image_size": 64,
            "trainer": {"max_steps": 2},
        },
        "vit_small_patch14_reg4_dinov2",
        "timm/vit_small_patch14_reg4_dinov2.lvd142m",
    ),
}


def _config(tmp_path, entry):
    raw = tiny_raw(tmp_path / "results")
    raw["models"] = [entry]
    return write_yaml(tmp_path / "vit.yaml", raw)


def _no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network touched")

    monkeypatch.setattr(socket, "create_connection", refuse)


def _records(tmp_path):
    return [json.loads(p.read_text()) for p in sorted((tmp_path / "results").glob("tiny/runs/*/*/seed-*/record.json"))]


def _encoder_file(tmp_path, encoder, value=0.125):
    """A state dict of the untrained timm encoder, its class token set to ``value`` (to see it loaded)."""
    import timm
    import torch

    state = timm.create_model(encoder, pretrained=False).state_dict()
    state["cls_token"] = torch.full_like(state["cls_token"], value)
    path = tmp_path / f"{encoder}.pth"
    torch.save(state, path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(VIT))
def test_an_untrained_encoder_runs_the_model_offline_with_a_note(tmp_path, monkeypatch, name):
    entry, encoder, _ = VIT[name]
    _no_network(monkeypatch)
    result = CliRunner().invoke(app, ["sweep", str(_config(tmp_path, {**entry, "pre_trained": False}))])
    assert result.exit_code == 0, result.output
    assert f"uses an untrained {encoder} (pre_trained: false)" in " ".join(result.output.split())
    [record] = _records(tmp_path)
    assert record["status"] == "success", record["error"]
    assert 0.0 <= record["metrics"]["image_AUROC"] <= 1.0
    assert 0.0 <= record["metrics"]["pixel_AUROC"] <= 1.0
    assert record["weights"] == {"backbone": f"untrained {encoder} (pre_trained: false)"}


# Dinomaly's 8 decoder blocks take longer to build than the ~20 s a default test may take on 2 cores.
@pytest.mark.parametrize(
    "name", [n if n != "dinomaly" else pytest.param(n, marks=pytest.mark.slow) for n in sorted(VIT)]
)
def test_a_weights_file_is_loaded_by_adrun_not_by_anomalib_or_timm(tmp_path, monkeypatch, name):
    from functools import reduce

    from adrun.config import validate
    from adrun.models import SPECS

    entry, encoder, _ = VIT[name]
    path = _encoder_file(tmp_path, encoder)
    _no_network(monkeypatch)
    cfg = validate({"name": "x", "models": [{**entry, "weights": str(path)}]}).models[0]
    model = SPECS[name].build(cfg, tmp_path, False)
    vit = reduce(getattr, f"{SPECS[name].encoder_at}.feature_extractor".split("."), model)
    assert float(vit.cls_token.detach().flatten()[0]) == 0.125 and float(vit.cls_token.detach().std()) == 0.0
    assert SPECS[name].sources(cfg) == {"backbone": f"file {path.resolve()}"}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(VIT))
def test_a_run_from_a_weights_file_names_it_in_the_record(tmp_path, name):
    entry, encoder, _ = VIT[name]
    path = _encoder_file(tmp_path, encoder)
    result = CliRunner().invoke(app, ["sweep", str(_config(tmp_path, {**entry, "weights": str(path)}))])
    assert result.exit_code == 0, result.output
    [record] = _records(tmp_path)
    assert record["status"] == "success", record["error"]
    assert 0.0 <= record["metrics"]["image_AUROC"] <= 1.0
    assert record["weights"] == {"backbone": f"file {path.resolve()}"}


@pytest.mark.parametrize("name", sorted(VIT))
def test_a_missing_encoder_is_refused_in_one_line_naming_the_file_without_the_network(tmp_path, monkeypatch, name):
    entry, encoder, repo = VIT[name]
    _no_network(monkeypatch)
    config = _config(tmp_path, entry)
    result = CliRunner().invoke(app, ["sweep", str(config)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    line = " ".join(result.output.split())
    assert f"model.safetensors of Hugging Face repo {repo}" in line
    assert f"hub/models--{repo.replace('/', '--')};" in line  # timm's cache folder of that repo
    assert f"run `adrun fetch {config}`" in line
    assert not (tmp_path / "results" / "tiny" / "runs").exists()


@pytest.mark.parametrize("name", sorted(VIT))
def test_a_weights_file_of_another_architecture_is_refused_before_the_run(tmp_path, name):
    entry, _, _ = VIT[name]
    path = _encoder_file(tmp_path, "vit_tiny_patch16_224")
    result = CliRunner().invoke(app, ["sweep", str(_config(tmp_path, {**entry, "weights": str(path)}))])
    assert result.exit_code == 2, result.output
    assert f"does not fit encoder {VIT[name][1]}" in " ".join(result.output.split())
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("name", sorted(VIT))
def test_fetch_plans_timms_own_download_of_the_encoder(tmp_path, monkeypatch, name):
    import timm

    entry, encoder, _ = VIT[name]
    monkeypatch.delenv("HF_HUB_OFFLINE")
    calls = []
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: calls.append((a, k)))
    result = CliRunner().invoke(app, ["fetch", str(_config(tmp_path, entry))])
    assert result.exit_code == 0, result.output
    assert calls == [((encoder,), {"pretrained": True})]
    assert f"get  backbone {encoder} -> " in result.output and "hub" in result.output


# What `adrun models` says each needs: the file anomalib's default encoder loads, and its repo.
WEIGHTS = {
    "anomaly_dino": "model.safetensors of timm/vit_small_patch14_dinov2.lvd142m",
    "dinomaly": "model.safetensors of timm/vit_base_patch14_reg4_dinov2.lvd142m",
    "winclip": "open_clip ViT-B-16-plus-240 (laion400m_e31): vit_b_16_plus_240-laion400m_e31-8fb26589.pt in ~/.cache/clip",
}


def test_adrun_models_names_each_vit_models_weights():
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0
    text = result.output
    for name, expected in WEIGHTS.items():
        block = " ".join(text[text.index(f"{name}  (") :].split("\n\n")[0].split())
        weights = block[block.index(" weights: ") : block.index(" offline: ")]
        assert expected in weights, weights
        assert block[block.index(" offline: ") :].startswith(" offline: with pre_trained: false ("), block


# --------------------------------------------------------------------------- WinCLIP (open_clip)

# One 13 x 13 window per image position (9 in all) instead of anomalib's 365: WinCLIP's
# cost on CPU is one vision-tower pass per window.
WINCLIP = {"name": "winclip", "scales": [13]}


def _clip_file(path, value=0.125):
    """open_clip's ViT-B-16-plus-240 state dict, untrained, in float16 (half the 800 MB), logit_scale set."""
    import open_clip
    import torch

    from adrun.models.winclip import MODEL

    state = open_clip.create_model(MODEL, pretrained=None).state_dict()
    state = {k: v.half() for k, v in state.items()}
    state["logit_scale"] = torch.full_like(state["logit_scale"], value)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


@pytest.mark.slow
def test_winclip_runs_zero_shot_with_a_random_clip_offline(tmp_path, monkeypatch):
    _no_network(monkeypatch)
    result = CliRunner().invoke(app, ["sweep", str(_config(tmp_path, {**WINCLIP, "pre_trained": False}))])
    assert result.exit_code == 0, result.output
    assert "uses a random ViT-B-16-plus-240 (pre_trained: false)" in " ".join(result.output.split())
    [record] = _records(tmp_path)
    assert record["status"] == "success", record["error"]
    assert 0.0 <= record["metrics"]["image_AUROC"] <= 1.0
    assert 0.0 <= record["metrics"]["pixel_AUROC"] <= 1.0
    assert record["weights"] == {"clip": "random ViT-B-16-plus-240 (pre_trained: false)"}


@pytest.mark.slow
def test_winclip_loads_open_clips_cached_file_itself_and_names_it(tmp_path, monkeypatch):
    """The file open_clip would unpickle is read by adrun with weights_only, from ~/.cache/clip or weights: FILE."""
    from adrun.config import validate
    from adrun.models import SPECS
    from adrun.models.winclip import FILE, cache_dir

    cached = _clip_file(cache_dir() / FILE)
    _no_network(monkeypatch)
    cfg = validate({"name": "x", "models": [{**WINCLIP, "weights": str(cached)}]}).models[0]
    model = SPECS["winclip"].build(cfg, tmp_path, False)
    assert float(model.model.clip.logit_scale.detach()) == 0.125
    assert SPECS["winclip"].sources(cfg) == {"clip": f"file {cached.resolve()}"}

    result = CliRunner().invoke(app, ["sweep", str(_config(tmp_path, WINCLIP))])
    assert result.exit_code == 0, result.output
    [record] = _records(tmp_path)
    assert record["status"] == "success", record["error"]
    assert 0.0 <= record["metrics"]["image_AUROC"] <= 1.0
    assert record["weights"] == {"clip": f"open_clip ViT-B-16-plus-240 laion400m_e31, file {cached.resolve()}"}


def test_winclip_without_clips_weights_is_refused_in_one_line_naming_the_file(tmp_path, monkeypatch):
    _no_network(monkeypatch)
    config = _config(tmp_path, WINCLIP)
    result = CliRunner().invoke(app, ["sweep", str(config)])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output, result.output
    line = " ".join(result.output.split())
    assert "WinCLIP's CLIP weights vit_b_16_plus_240-laion400m_e31-8fb26589.pt are not in " in line
    assert "/.cache/clip; run `adrun fetch" in line
    assert not (tmp_path / "results" / "tiny" / "runs").exists()


def test_winclip_refuses_a_file_that_is_not_its_clip(tmp_path):
    import torch

    path = tmp_path / "other.pth"
    torch.save({"visual.conv1.weight": torch.zeros(3, 3)}, path)
    result = CliRunner().invoke(app, ["sweep", str(_config(tmp_path, {**WINCLIP, "weights": str(path)}))])
    assert result.exit_code == 2, result.output
    assert "does not fit open_clip's ViT-B-16-plus-240" in " ".join(result.output.split())
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"image_size": 224}, "WinCLIP runs at 240 px only"),
        ({"scales": [16]}, "each scale must be between 1 and 15"),
        ({"k_shot": -1}, "k_shot"),
    ],
)
def test_winclip_config_rules(entry, message):
    from adrun.config import validate
    from adrun.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        validate({"name": "x", "models": [{**WINCLIP, **entry}]})
    assert message in str(caught.value)


def test_fetch_plans_open_clips_own_download_of_winclips_file(tmp_path, monkeypatch):
    import open_clip.pretrained

    from adrun.models.winclip import URL, cache_dir

    calls = []
    monkeypatch.setattr(open_clip.pretrained, "download_pretrained_from_url", lambda *a, **k: calls.append((a, k)))
    result = CliRunner().invoke(app, ["fetch", str(_config(tmp_path, WINCLIP))])
    assert result.exit_code == 0, result.output
    assert calls == [((URL,), {"cache_dir": str(cache_dir())})]
    assert URL.endswith("/v0.2-weights/vit_b_16_plus_240-laion400m_e31-8fb26589.pt")
    assert "get clip vit_b_16_plus_240-laion400m_e31-8fb26589.pt -> " in " ".join(result.output.split())


# --------------------------------------------------------------------------- VLM-AD (listed only)


@pytest.mark.parametrize(
    ("model", "needs"),
    [
        ("llava", "a running Ollama server (pip install ollama; ollama pull llava)"),
        ("gpt-4o-mini", "OpenAI's API over the network"),
        ("llava-hf/llava-v1.6-mistral-7b-hf", "transformers and the 7B model llava-hf/llava-v1.6-mistral-7b-hf"),
    ],
)
def test_vlm_ad_is_refused_in_one_line_saying_what_it_needs(tmp_path, monkeypatch, model, needs):
    _no_network(monkeypatch)
    result = CliRunner().invoke(app, ["sweep", str(_config(tmp_path, {"name": "vlm_ad", "model": model}))])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output, result.output
    line = " ".join(result.output.split())
    assert f"vlm_ad: adrun lists VLM-AD but does not run it: model {model} needs {needs}" in line
    assert not (tmp_path / "results" / "tiny" / "runs").exists()


def test_adrun_models_lists_vlm_ad_as_not_runnable_offline():
    result = CliRunner().invoke(app, ["models"])
    text = " ".join(result.output.split())
    block = text[text.index("vlm_ad (") :]
    assert "weights: a VLM: an Ollama server with llava, OpenAI's API, or 7B/13B LLaVA-NeXT weights" in block
    assert "offline: no (adrun does not run it" in block
