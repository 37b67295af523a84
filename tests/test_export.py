"""Export through anomalib's Engine.export: the exported model gives the checkpoint's anomaly map."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from adrun.cli import app

runner = CliRunner()
# Post-processed maps lie in 0-1; float32 graphs differ from eager torch in the last bits.
TOLERANCE = 1e-4


def reference_map(run, image):
    """The anomaly map of the checkpoint itself, through the same inference module."""
    from adrun.run import _load

    _, cell, ckpt = _load(run)
    from adrun import registry

    model = registry.build_model(cell, run.parent.parent.parent)
    model = type(model).load_from_checkpoint(ckpt, map_location="cpu").eval()
    with torch.no_grad():
        return model(image).anomaly_map.numpy()


@pytest.fixture(scope="module")
def run_and_image(reported):
    from PIL import Image

    run = reported / "runs" / "patchcore" / "tile" / "seed-42"
    path = sorted((reported / "data" / "tile" / "test" / "scratch").glob("*.png"))[0]
    array = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    image = torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()
    return run, image, reference_map(run, image)


def test_torch_export_gives_the_checkpoints_anomaly_map(run_and_image, tmp_path):
    run, image, expected = run_and_image
    result = runner.invoke(app, ["export", str(run), "--format", "torch", "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    path = tmp_path / "torch" / "model.pt"
    assert result.output.strip().endswith(f"wrote {path}")
    model = torch.load(path, map_location="cpu", weights_only=False)["model"].eval()  # our own file
    with torch.no_grad():
        got = model(image).anomaly_map.numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=TOLERANCE)
    assert expected.max() > 0  # a real map, not all zeros


# CI installs the extra (make test), so there a missing one fails instead of skipping.
@pytest.mark.skipif(
    os.environ.get("CI", "").lower() != "true"
    and any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxscript", "onnxruntime")),
    reason="needs the export extra: pip install 'adrun[export]'",
)
def test_onnx_export_gives_the_checkpoints_anomaly_map(run_and_image, tmp_path):
    import onnxruntime

    run, image, expected = run_and_image
    result = runner.invoke(app, ["export", str(run), "--format", "onnx", "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    session = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    assert "anomaly_map" in names
    got = session.run(["anomaly_map"], {session.get_inputs()[0].name: image.numpy()})[0]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=TOLERANCE)


def test_missing_extra_is_one_line_naming_the_install(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    result = runner.invoke(app, ["export", str(tmp_path), "--format", "openvino"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "adrun: error: --format openvino needs openvino, not installed here; run: pip install 'adrun[export]'"
    ]


def test_unknown_format_and_missing_run(tmp_path):
    result = runner.invoke(app, ["export", str(tmp_path), "--format", "tflite"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "adrun: error: --format tflite: unknown; choose one of torch, onnx, openvino"
    result = runner.invoke(app, ["export", str(tmp_path), "--format", "torch"])
    assert result.exit_code == 2
    assert result.stderr.strip().startswith(f"adrun: error: {tmp_path}: no record.json here")
