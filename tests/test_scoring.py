"""adrun's Patchcore scoring path gives anomalib's numbers.

- ``precision`` resolves to what the CPU runs natively and reaches the cell's key.
- The test set is scored once: the test step reuses the validation step's raw
  predictions, and every metric equals the path that scores it twice.
"""

from __future__ import annotations

import pytest
import torch

from adrun.precision import native_bf16, resolve


def test_precision_resolves_to_fp32_without_native_bf16(monkeypatch):
    assert resolve("fp32") == {"asked": "fp32", "used": "fp32", "note": "exact path"}
    monkeypatch.setattr("adrun.precision.native_bf16", lambda: (False, "this CPU has no avx512_bf16 or amx_bf16"))
    info = resolve("bf16")
    assert info["used"] == "fp32" and "no avx512_bf16" in info["note"]
    with pytest.raises(ValueError, match="unknown precision"):
        resolve("fp8")


def test_native_bf16_reads_the_cpu_flags(monkeypatch):
    import adrun.precision as precision

    monkeypatch.setattr(torch, "cpu", type("NoProbes", (), {})())  # no private torch probes
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "avx512f"})
    assert native_bf16() == (False, "this CPU has no avx512_bf16 or amx_bf16 instructions")
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx512f", "avx512_bf16", "amx_bf16"})
    assert native_bf16() == (True, "avx512_bf16+amx_bf16")


@pytest.mark.slow
def test_test_set_is_scored_once_with_the_same_metrics(tmp_path, monkeypatch):
    """The tiny config's Patchcore cell: reusing validation's predictions in test gives the
    metrics and thresholds of scoring the test set again (the old path)."""
    from conftest import tiny_raw

    from adrun.config import expand, validate
    from adrun.data import prepare
    from adrun.models.patchcore.lightning import AdrunPatchcore
    from adrun.run import run_cell

    raw = tiny_raw(tmp_path / "results")
    raw["models"] = raw["models"][:1]
    # The F1 scores hang on the thresholds validation computes: the ones to watch.
    raw["metrics"] = ["image_AUROC", "image_F1Score", "pixel_AUROC", "pixel_F1Score"]
    experiment = validate(raw)
    exp_dir = tmp_path / "results" / "tiny"
    root, categories = prepare(experiment, exp_dir)
    cell = expand(experiment, categories)[0]

    models = []
    original_init = AdrunPatchcore.__init__

    def keep(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        models.append(self)

    monkeypatch.setattr(AdrunPatchcore, "__init__", keep)
    once = run_cell(cell, root, exp_dir)
    assert once["runtime"]["test_batches_reused"] >= 1
    thresholds_once = models[-1].post_processor._image_threshold.clone(), models[-1].post_processor._pixel_threshold
    # The old path: the test step computes every batch again.
    monkeypatch.setattr(AdrunPatchcore, "_key", staticmethod(lambda images: object()))
    twice = run_cell(cell, root, tmp_path / "results" / "twice")
    assert twice["runtime"]["test_batches_reused"] == 0
    assert set(once["metrics"]) == {"image_AUROC", "image_F1Score", "pixel_AUROC", "pixel_F1Score"}
    assert once["metrics"] == twice["metrics"]
    assert torch.equal(thresholds_once[0], models[-1].post_processor._image_threshold)
    assert torch.equal(thresholds_once[1], models[-1].post_processor._pixel_threshold)
    phases = once["runtime"]["phases"]
    assert {"backbone", "projection", "coreset", "scoring", "metrics"} <= set(phases)
    assert once["runtime"]["precision"] == {"asked": "fp32", "used": "fp32", "note": "exact path"}


def test_precision_setting_and_cell_key(tmp_path):
    from conftest import tiny_raw

    from adrun.config import expand, validate
    from adrun.errors import ConfigError

    raw = tiny_raw(tmp_path)
    raw["models"] = raw["models"][:1]
    (plain,) = expand(validate(raw), ["tile"])
    raw["models"][0]["precision"] = "fp32"
    (fp32,) = expand(validate(raw), ["tile"])
    raw["models"][0]["precision"] = "bf16"
    (bf16,) = expand(validate(raw), ["tile"])
    assert plain.model.precision == "fp32" and bf16.model.precision == "bf16"
    assert plain.key == fp32.key != bf16.key
    raw["models"][0]["precision"] = "fp8"
    with pytest.raises(ConfigError, match="precision"):
        validate(raw)
