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


def _features(n: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """Non-negative features around a shared mean, like pooled ReLU activations."""
    base = torch.rand(dim, generator=generator) * 3
    return (torch.randn(n, dim, generator=generator) * 0.5 + base).relu_()


@pytest.mark.parametrize("kernel", ["onednn", "blas"])
def test_the_fused_search_finds_stocks_nearest_rows_and_distances(kernel, monkeypatch):
    """adrun's fp32 search against anomalib's own nearest_neighbors: the same rows, distances within 1e-5.

    Both GEMM kernels; each is as close to the float64 truth as fp32's rounding allows.
    """
    from anomalib.models.image.patchcore.torch_model import PatchcoreModel

    from adrun.models.patchcore.search import Bank, nearest

    generator = torch.Generator().manual_seed(0)
    bank, queries = _features(3000, 384, generator), _features(2500, 384, generator)
    model = PatchcoreModel.__new__(PatchcoreModel)  # only the search's attributes
    torch.nn.Module.__init__(model)
    model.register_buffer("memory_bank", bank)
    from adrun.models.patchcore import search

    if kernel == "onednn" and not search._has_onednn():
        pytest.skip("this torch has no oneDNN")
    monkeypatch.setitem(search._KERNELS, torch.float32, kernel)
    stock_scores, stock_rows = model.nearest_neighbors(queries, n_neighbors=1)
    scores, rows = nearest(queries, Bank(bank))
    assert torch.equal(rows, stock_rows)
    assert float(((scores - stock_scores).abs() / stock_scores).max()) < 1e-5
    # Against float64 on the same rows: within the fp32 bound of ||x||^2 - 2 x.y + ||y||^2
    # (d + 2 roundings of 2**-24 on a sum of at most (|x| + |y|)^2), for stock and adrun alike.
    wide_x, wide_y = queries.double(), bank[rows].double()
    truth = (wide_x - wide_y).pow(2).sum(1)
    bound = (384 + 2) * 2.0**-24 * (wide_x.norm(dim=1) + wide_y.norm(dim=1)).pow(2)
    for found in (scores, stock_scores):
        assert bool(((found.double().pow(2) - truth).abs() <= bound).all())
    # A query equal to a bank row finds it at distance 0 exactly: ||x - y|| has no
    # cancellation, where stock's ||x||^2 - 2 x.y + ||y||^2 leaves rounding noise.
    scores, rows = nearest(bank[:5].clone(), Bank(bank))
    assert torch.equal(rows, torch.arange(5)) and torch.equal(scores, torch.zeros(5))


def test_the_gemm_kernel_is_measured_once_and_falls_back_to_blas(monkeypatch):
    """The faster kernel is timed once per dtype and kept; without oneDNN, torch's BLAS."""
    from adrun.models.patchcore import search

    monkeypatch.setattr(search, "_KERNELS", {})
    chosen = search.gemm_kernel(torch.float32, 64)
    assert chosen in ("onednn", "blas") and search._KERNELS == {torch.float32: chosen}
    with monkeypatch.context() as patched:
        patched.setattr(search, "_measure", lambda *_: pytest.fail("measured twice"))
        assert search.gemm_kernel(torch.float32, 64) == chosen
    monkeypatch.setattr(search, "_KERNELS", {})
    monkeypatch.setattr(search, "_has_onednn", lambda: False)
    assert search.gemm_kernel(torch.float32, 64) == "blas"
    bank = search.Bank(torch.rand(50, 64))
    _, rows = search.nearest(bank.bank[:3] + 1e-3, bank)
    assert torch.equal(rows, torch.arange(3)) and bank.kernels == {"fp32": "blas"}


def test_the_bf16_filter_rechecks_in_fp32_and_counts_what_it_proves():
    from adrun.models.patchcore.search import Bank, nearest, nearest_bf16

    generator = torch.Generator().manual_seed(1)
    bank, queries = _features(3000, 384, generator), _features(2500, 384, generator)
    exact_scores, exact_rows = nearest(queries, Bank(bank))
    stats: dict[str, int] = {}
    scores, rows = nearest_bf16(queries, Bank(bank), stats)
    # Every score is the fp32 distance to the row it names (never a bf16 number).
    direct = torch.linalg.vector_norm(queries - bank[rows], dim=1)
    assert float(((scores - direct).abs() / direct).max()) < 1e-5
    assert stats["queries"] == 2500 and 0 < stats["proven"] <= 2500
    # A proven row is the exact nearest row; here bf16 finds every one.
    assert float((rows == exact_rows).float().mean()) > 0.99
    assert float(((scores - exact_scores).abs() / exact_scores).max()) < 1e-5
    # Far-apart rows: each query's margin beats bf16's worst case, so every one is proven.
    far = torch.randn(1000, 384, generator=generator) * 50
    stats = {}
    _, rows = nearest_bf16(far[:40] + 0.01, Bank(far), stats)
    assert stats == {"queries": 40, "proven": 40} and torch.equal(rows, torch.arange(40))
