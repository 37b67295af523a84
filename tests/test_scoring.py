"""adrun's Patchcore scoring path gives anomalib's numbers.

- ``adrun.scoring.Scorer`` returns the distances and indices of anomalib's
  ``PatchcoreModel.nearest_neighbors`` bit for bit (ties included), or falls back to it.
- The test set is scored once: the test step reuses the validation step's raw
  predictions, and every metric equals the path that scores it twice.
"""

from __future__ import annotations

import pytest
import torch
from anomalib.models.image.patchcore.torch_model import PatchcoreModel

from adrun.precision import native_bf16, resolve
from adrun.scoring import Scorer


def patchcore_like(n: int, dim: int, seed: int) -> torch.Tensor:
    """Non-negative, low-rank, offset from the origin: like pooled ReLU features."""
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(n, 8, generator=g) @ torch.randn(8, dim, generator=g)
    return (latent + 0.3 * torch.randn(n, dim, generator=g)).relu_() + 0.5


def stock_nearest(embedding: torch.Tensor, bank: torch.Tensor):
    model = PatchcoreModel(layers=["layer1"], backbone="resnet18", pre_trained=False)
    model.memory_bank = bank
    return model.nearest_neighbors(embedding, n_neighbors=1)


def test_tiled_search_is_bitwise_stock_with_ties():
    bank = patchcore_like(1300, 96, 0)  # three tiles, the last one ragged
    bank[700] = bank[5]  # an exact duplicate in a later tile: a tie the first index must win
    bank[1290] = bank[600]
    queries = patchcore_like(2 * 1024 + 300, 96, 1)  # two full chunks and a ragged one
    queries[:40] = bank[5]  # distance 0, tied between rows 5 and 700
    queries[1024:1060] = bank[600] + 1e-7
    scorer = Scorer(bank)
    values, indices = scorer.nearest(queries)
    expected = stock_nearest(queries, bank)
    assert torch.equal(values, expected[0]) and torch.equal(indices, expected[1])
    assert (indices[:40] == 5).all()
    assert scorer.tiled_equal is True and scorer.stats["tiled"] == 2 and scorer.stats["stock"] == 1


def test_small_batches_use_anomalib_code():
    bank = patchcore_like(600, 32, 2)
    queries = patchcore_like(700, 32, 3)  # one chunk of 700 rows: anomalib's single call
    scorer = Scorer(bank)
    values, indices = scorer.nearest(queries)
    expected = stock_nearest(queries, bank)
    assert torch.equal(values, expected[0]) and torch.equal(indices, expected[1])
    assert scorer.stats == {**scorer.stats, "tiled": 0, "stock": 1}


def test_a_differing_blas_falls_back_to_anomalib(monkeypatch):
    bank = patchcore_like(900, 48, 4)
    queries = patchcore_like(3 * 1024, 48, 5)
    original = Scorer._tiled

    def off_by_one_ulp(self, x):
        value, index = original(self, x)
        return torch.nextafter(value, torch.full_like(value, float("inf"))), index

    monkeypatch.setattr(Scorer, "_tiled", off_by_one_ulp)
    scorer = Scorer(bank)
    values, indices = scorer.nearest(queries)
    expected = stock_nearest(queries, bank)
    assert torch.equal(values, expected[0]) and torch.equal(indices, expected[1])
    assert scorer.tiled_equal is False and scorer.stats["tiled"] == 0


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
    from adrun.models import AdrunPatchcore
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
