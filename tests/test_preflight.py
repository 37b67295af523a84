"""Preflight, doctor and fetch: every cell is checked before the first runs, offline answers come fast.

Nothing here touches the network: conftest sets HF_HUB_OFFLINE=1 and ADRUN_OFFLINE=1
(no probes); the probe itself is tested against sockets on 127.0.0.1.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time

import pytest
import torch
from conftest import CONFIGS, tiny_raw, write_yaml
from typer.testing import CliRunner

from adrun import checks as probe
from adrun import fetch, preflight
from adrun.checks import Check
from adrun.cli import app
from adrun.config import expand, load_experiment
from adrun.models import backbone, efficient_ad

runner = CliRunner()
ASSIGNMENT = CONFIGS / "assignment.yaml"
SYNTHETIC = ["--set", "data.format=synthetic", "--set", "data.root=null"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich would truncate the table's cells at 80


# --------------------------------------------------------------------------- fail fast


def test_assignment_with_nothing_cached_fails_fast_naming_the_fixes(tmp_path):
    """The issue's case: pretrained WRN50, teacher and imagenette wanted, no cache, offline.

    Fast means no hub client is ever asked (its retries take about a minute per file): the
    answer comes from the cache folders alone. scripts/bench_preflight.py times it.
    """
    done = subprocess.run(
        [sys.executable, "-m", "adrun.cli", "sweep", str(ASSIGNMENT), *SYNTHETIC, "--output", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 3 and all(line.startswith("adrun: error: ") for line in lines), done.stderr
    weights, teacher, imagenette = lines
    assert weights.startswith(
        "adrun: error: patchcore: timm's pretrained weights for wide_resnet50_2.tv_in1k are "
        "not in the Hugging Face cache "
    )
    assert "HF_HUB_OFFLINE=1 forbids downloading" in weights
    assert "set weights: FILE (a local state dict) or pre_trained: false on that model entry" in weights
    assert f"run `adrun fetch {ASSIGNMENT}` on a machine with internet" in weights
    assert "efficient_ad: EfficientAd's pretrained teacher is not in anomalib's cache" in teacher
    assert "set teacher: FILE (pretrained_teacher_small.pth)" in teacher and "adrun fetch" in teacher
    assert "efficient_ad: imagenet_dir datasets/imagenette does not exist" in imagenette
    assert "set imagenet_dir: to an ImageFolder folder" in imagenette and "adrun fetch" in imagenette
    assert "Traceback" not in done.stderr and "LocalEntryNotFoundError" not in done.stderr
    assert not (tmp_path / "assignment" / "runs").exists()  # no cell started


def test_unreachable_network_is_named_when_not_offline(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(probe, "reachable", lambda *urls: {u: False for u in urls})
    experiment = load_experiment(ASSIGNMENT, ["data.format=synthetic", "data.root=null", f"output={tmp_path}"])
    lines = preflight.problems(preflight.doctor_cells(experiment))
    assert "and huggingface.co is unreachable (no network?); set weights: FILE" in lines[0]


def test_reachable_probes_with_a_short_timeout(monkeypatch):
    monkeypatch.delenv("ADRUN_OFFLINE")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, not listening: refused at once
    try:
        up, down = f"http://127.0.0.1:{server.getsockname()[1]}/", f"http://127.0.0.1:{closed.getsockname()[1]}/"
        start = time.perf_counter()
        assert probe.reachable(up, down) == {up: True, down: False}
        assert time.perf_counter() - start < probe.PROBE_TIMEOUT_S + 1
    finally:
        server.close()
        closed.close()
    monkeypatch.setenv("ADRUN_OFFLINE", "1")
    assert probe.reachable("https://example.invalid/") == {"https://example.invalid/": False}


# --------------------------------------------------------------------------- where weights are found


def fake_hub_cache(state: dict, backbone: str = "resnet18"):
    """A Hugging Face cache entry laid out as the hub client writes it, holding ``state``."""
    from safetensors.torch import save_file
    from timm.models import get_pretrained_cfg

    repo = get_pretrained_cfg(backbone).hf_hub_id
    folder = probe.hf_cache_dir() / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    (folder / "snapshots" / commit).mkdir(parents=True)
    save_file(state, str(folder / "snapshots" / commit / "model.safetensors"))
    return repo


def test_hub_cache_is_used_offline(tmp_path, monkeypatch):
    import huggingface_hub.constants
    import timm

    torch.manual_seed(5)
    state = timm.create_model("resnet18", pretrained=False).state_dict()
    repo = fake_hub_cache(state)
    raw = tiny_raw(tmp_path)
    raw["models"] = [{**raw["models"][0], "pre_trained": True}]
    reports = preflight.check_cells(expand(load_experiment(raw=raw), ["tile"]), tmp_path)
    assert reports[0].checks["weights"] == Check(True, "cached")
    # The run itself: timm reads the same cache entry, offline.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(probe.hf_cache_dir()))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    from adrun.models.patchcore.lightning import AdrunPatchcore

    model = AdrunPatchcore(backbone="resnet18", layers=["layer2", "layer3"], pre_trained=True, visualizer=False)
    for key, tensor in model.model.feature_extractor.feature_extractor.state_dict().items():
        assert torch.equal(tensor, state[key]), key
    assert repo == "timm/resnet18.a1_in1k"


def efficient_ad_raw(tmp_path, **model) -> dict:
    raw = tiny_raw(tmp_path / "results")
    raw["models"] = [{**raw["models"][1], **model}]
    return raw


def efficient_ad_checks(tmp_path, **model) -> dict:
    experiment = load_experiment(raw=efficient_ad_raw(tmp_path, **model))
    return preflight.doctor_cells(experiment)[0].checks


def test_teacher_sources(tmp_path):
    from anomalib.models.image.efficient_ad.torch_model import MediumPatchDescriptionNetwork

    checks = efficient_ad_checks(tmp_path, teacher="auto")
    assert not checks["teacher"].ok and "is not in anomalib's cache" in checks["teacher"].problems[0]
    folder = efficient_ad.teacher_dir()
    folder.mkdir()
    checks = efficient_ad_checks(tmp_path, teacher="auto")
    assert checks["teacher"].detail == "incomplete" and "delete that folder" in checks["teacher"].problems[0]
    (folder / "pretrained_teacher_small.pth").write_bytes(b"x")
    assert efficient_ad_checks(tmp_path, teacher="auto")["teacher"] == Check(True, "cached")
    medium = tmp_path / "pretrained_teacher_medium.pth"
    torch.save(MediumPatchDescriptionNetwork(out_channels=384).state_dict(), medium)
    check = efficient_ad_checks(tmp_path, teacher=str(medium))["teacher"]
    assert not check.ok and check.detail == "bad file"
    assert check.problems[0].startswith(f"efficient_ad: teacher file {medium} does not fit model_size small (")
    assert "it is a medium teacher: set model_size: medium" in check.problems[0]
    assert efficient_ad_checks(tmp_path, teacher=str(medium), model_size="medium")["teacher"].ok


def test_imagenet_dir_needs_a_class_folder(tmp_path):
    folder = tmp_path / "imagenette"
    check = efficient_ad_checks(tmp_path, imagenet_dir=str(folder))["imagenette"]
    assert check.detail == "missing" and "does not exist" in check.problems[0]
    folder.mkdir()
    (folder / "loose.jpg").write_bytes(b"")  # not in a class subfolder: ImageFolder finds no class
    check = efficient_ad_checks(tmp_path, imagenet_dir=str(folder))["imagenette"]
    assert check.problems == (
        f"efficient_ad: imagenet_dir {folder} has no class subfolder with images "
        f"(ImageFolder layout: {folder}/<class>/*.jpg); point imagenet_dir: at the "
        "extracted imagenette2 folder, or delete the empty folder so anomalib downloads "
        "imagenette into it",
    )
    (folder / "imagenette2" / "train" / "n01440764").mkdir(parents=True)
    (folder / "imagenette2" / "train" / "n01440764" / "a.JPEG").write_bytes(b"")
    assert efficient_ad_checks(tmp_path, imagenet_dir=str(folder))["imagenette"] == Check(True, "found")


def test_bad_weights_file_stops_the_sweep_before_any_cell(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a torch file")
    raw = tiny_raw(tmp_path / "results")
    raw["models"][0].update(pre_trained=True, weights=str(bad))
    result = runner.invoke(app, ["sweep", str(write_yaml(tmp_path / "c.yaml", raw))])
    assert result.exit_code == 2
    assert result.output.startswith(f"adrun: error: patchcore: weights file {bad} cannot be read (")
    assert result.output.count("\n") == 1
    assert not (tmp_path / "results" / "tiny" / "runs").exists()


# --------------------------------------------------------------------------- doctor


def test_doctor_explains_what_the_assignment_misses(tmp_path):
    result = invoke("doctor", ASSIGNMENT, "--set", f"output={tmp_path}")
    assert result.exit_code == 2
    out = result.output
    for name in ("adrun", "anomalib", "torch", "lightning", "accelerator", "Hugging Face cache", "anomalib cache"):
        assert name in out
    rows = [line for line in out.splitlines() if "/tile" in line or "/grid" in line or "/leather" in line]
    assert len(rows) == 6
    # Piped (CliRunner): plain columns, two spaces or more apart.
    patchcore = re.split(r"\s{2,}", next(r for r in rows if "patchcore/tile" in r).strip())
    assert patchcore == ["patchcore/tile", "missing", "missing", "–", "–", "no"]
    efficient = re.split(r"\s{2,}", next(r for r in rows if "efficient_ad/grid" in r).strip())
    assert efficient == ["efficient_ad/grid", "missing", "–", "missing", "missing", "no"]
    assert "adrun: error: data.root datasets/MVTecAD does not exist" in out
    assert out.count("adrun: error: ") == 4  # dataset, weights, teacher, imagenette: once each


def test_doctor_passes_a_ready_config(tmp_path):
    config = write_yaml(tmp_path / "tiny.yaml", tiny_raw(tmp_path / "results"))
    result = invoke("doctor", config)
    assert result.exit_code == 0, result.output
    row = re.split(r"\s{2,}", next(line for line in result.output.splitlines() if "patchcore/tile" in line).strip())
    assert row == ["patchcore/tile", "synthetic (made at run time)", "untrained (pre_trained: false)", "–", "–", "yes"]
    assert "every cell can run" in result.output
    assert not (tmp_path / "results").exists()  # doctor generates nothing


def test_doctor_without_config_shows_the_environment():
    result = invoke("doctor")
    assert result.exit_code == 0
    assert "1 (hub cache only)" in result.output  # HF_HUB_OFFLINE=1, set by conftest
    assert str(probe.hf_cache_dir()) in result.output
    assert "unreachable" in result.output  # ADRUN_OFFLINE=1: no probe, nothing counts as reachable


# --------------------------------------------------------------------------- fetch


def test_fetch_downloads_what_is_missing_with_the_libraries_own_code(tmp_path, monkeypatch):
    experiment = load_experiment(ASSIGNMENT, [f"output={tmp_path}", f"data.root={tmp_path / 'mvtec'}"])
    items = fetch.items(experiment)
    assert [(i.kind, i.name, i.present) for i in items] == [
        ("backbone", "wide_resnet50_2.tv_in1k", False),
        ("teacher", "pretrained_teacher_small.pth", False),
        ("imagenette", "datasets/imagenette", False),
        ("dataset", "tile", False),
        ("dataset", "leather", False),
        ("dataset", "grid", False),
    ]
    with pytest.raises(fetch.WeightsError, match="HF_HUB_OFFLINE=1 is set"):
        fetch.fetch(experiment)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    calls = []
    monkeypatch.setattr(backbone, "download", lambda name: calls.append(("timm", name)))
    monkeypatch.setattr(efficient_ad, "_download_teacher", lambda: calls.append(("anomalib", "teacher")))
    monkeypatch.setattr(efficient_ad, "_download_imagenette", lambda folder: calls.append(("anomalib", str(folder))))
    from adrun.datasets import mvtec

    monkeypatch.setattr(mvtec.MVTec, "download", lambda self, root, category: lambda: calls.append(("mvtec", category)))
    seen = []
    fetch.fetch(experiment, with_data=False, on_item=lambda item, status: seen.append((item.kind, status)))
    assert calls == [("timm", "wide_resnet50_2.tv_in1k"), ("anomalib", "teacher"), ("anomalib", "datasets/imagenette")]
    assert seen == [
        ("backbone", "start"),
        ("backbone", "done"),
        ("teacher", "start"),
        ("teacher", "done"),
        ("imagenette", "start"),
        ("imagenette", "done"),
    ]


def test_fetch_hosts_match_anomalibs_downloads():
    from urllib.parse import urlsplit

    from anomalib.models.image.efficient_ad.lightning_model import IMAGENETTE_DOWNLOAD_INFO, WEIGHTS_DOWNLOAD_INFO

    assert urlsplit(WEIGHTS_DOWNLOAD_INFO.url).hostname == urlsplit(efficient_ad.TEACHER_URL).hostname
    assert IMAGENETTE_DOWNLOAD_INFO.url == efficient_ad.IMAGENETTE_URL
    assert os.environ["ADRUN_OFFLINE"] == "1"
