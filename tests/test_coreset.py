"""adrun's fast coreset sampler picks exactly what anomalib's KCenterGreedy picks.

"Exactly" means the same indices in the same order, under the same seed: the fast
sampler consumes the global RNG as stock does and computes every distance it keeps
with stock's arithmetic. Data with near-duplicate rows makes the argmax sensitive to
the last bit of each distance, so an inexact formula fails these tests.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from anomalib.models.components.sampling import KCenterGreedy

import adrun.models.patchcore.coreset as coreset
from adrun.models.patchcore.coreset import FastKCenterGreedy, sample_coreset


def seed_all(seed: int) -> None:
    # Stock's projection draws from numpy's global RNG as well as torch's.
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def low_rank(n: int, dim: int, seed: int) -> torch.Tensor:
    """Rows near a 6-dim subspace, like Patchcore features: the lower bound prunes well."""
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(n, 6, generator=g) @ torch.randn(6, dim, generator=g)
    return 3 * latent + 0.1 * torch.randn(n, dim, generator=g)


def near_duplicates(n: int, dim: int, seed: int) -> torch.Tensor:
    """40 points, each repeated with 1e-6 jitter: distances tie up to their last bits."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(40, dim, generator=g)
    rows = base[torch.randint(40, (n,), generator=g)]
    return rows + 1e-6 * torch.randn(n, dim, generator=g)


def exact_duplicates(n: int, dim: int, seed: int) -> torch.Tensor:
    """45 distinct rows: more picks than points, so ties and all-zero distances."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(45, dim, generator=g)[torch.randint(45, (n,), generator=g)]


def random_rows(n: int, dim: int, seed: int) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def picks(sampler_class, embedding: torch.Tensor, ratio: float, seed: int) -> list[int]:
    seed_all(seed)
    return sampler_class(embedding=embedding, sampling_ratio=ratio).select_coreset_idxs()


@pytest.fixture
def gathered_calls(monkeypatch):
    """Counts the pruned (gathered) updates, to prove a case exercised the bound."""
    calls = []
    original = coreset._ExactRows.gathered

    def spy(self, center, candidates, min_distances):
        calls.append(len(candidates))
        return original(self, center, candidates, min_distances)

    monkeypatch.setattr(coreset._ExactRows, "gathered", spy)
    return calls


@pytest.mark.parametrize(
    ("make", "n", "dim", "ratio", "seed", "pruned"),
    [
        (low_rank, 6007, 96, 0.05, 0, True),  # N prime: no chunk size divides it
        (low_rank, 4099, 200, 0.1, 1, True),
        (near_duplicates, 5003, 80, 0.03, 2, True),
        (exact_duplicates, 4500, 70, 0.02, 3, True),  # 90 picks of 45 distinct rows
        (random_rows, 5001, 128, 0.02, 4, False),  # isotropic: the dense fallback
        (random_rows, 37, 16, 0.1, 5, False),  # small N: 3 picks, no bound
        (random_rows, 10, 8, 0.1, 6, False),  # one pick: just the start index
    ],
)
def test_fast_picks_equal_stock(gathered_calls, make, n, dim, ratio, seed, pruned):
    embedding = make(n, dim, seed)
    expected = picks(KCenterGreedy, embedding, ratio, seed)
    assert len(expected) == int(n * ratio)
    assert picks(FastKCenterGreedy, embedding, ratio, seed) == expected
    # The pruned path must really have run where the data allows it, or these
    # cases would only test the dense path.
    assert bool(gathered_calls) == pruned
    if pruned:
        assert min(gathered_calls) < n / 10


def clustered(n: int, dim: int, seed: int) -> torch.Tensor:
    """Low-rank rows around 60 cluster centres of different spread: hot sets with ties
    near tau, catch-ups that change many rows."""
    g = torch.Generator().manual_seed(seed)
    centres = 4 * torch.randn(60, 6, generator=g) @ torch.randn(6, dim, generator=g)
    which = torch.randint(60, (n,), generator=g)
    spread = 0.05 + torch.rand(60, generator=g)[which, None]
    return centres[which] + spread * torch.randn(n, dim, generator=g)


@pytest.mark.parametrize(
    ("make", "n", "dim", "ratio", "seed", "hot"),
    [
        (low_rank, 8009, 96, 0.1, 21, True),
        (clustered, 7001, 80, 0.1, 22, True),
        # Near-ties everywhere: once the 40 points are picked, every distance is below the
        # bound's slack, the bound cannot prune and dense passes do the picking.
        (near_duplicates, 6007, 64, 0.05, 23, False),
        (exact_duplicates, 5003, 72, 0.03, 24, True),  # 150 picks of 45 distinct rows: all-zero distances
    ],
)
def test_hot_cold_picks_equal_stock(monkeypatch, make, n, dim, ratio, seed, hot):
    # Small tiles and hot sets: many catch-ups, ragged tiles and pair chunks.
    monkeypatch.setattr(coreset, "_HOT_FRACTION", 0.004)
    monkeypatch.setattr(coreset, "_TILE_ROWS", 1000)
    monkeypatch.setattr(coreset, "_TILE_CENTERS", 7)
    monkeypatch.setattr(coreset, "_PAIR_CHUNK", 333)
    embedding = make(n, dim, seed)
    expected = picks(KCenterGreedy, embedding, ratio, seed)
    stats = {}
    original = coreset.greedy_picks
    monkeypatch.setattr(coreset, "greedy_picks", lambda f, s, k: original(f, s, k, stats=stats))
    assert picks(FastKCenterGreedy, embedding, ratio, seed) == expected
    if not hot:
        assert stats["hot_picks"] == 0 and stats["dense_picks"] > 0
        return
    # The hot/cold loop did the picking, with catch-ups.
    assert stats["hot_picks"] + stats["argmax_picks"] > 0.6 * len(expected)
    assert stats["catch_ups"] >= 3
    if make is exact_duplicates:
        # Once every row is at distance 0, no threshold separates them: stock's argmax over all.
        assert stats["argmax_picks"] > 0


def test_hot_cold_default_settings_equal_stock():
    embedding = low_rank(9001, 128, 25)
    stats = {}
    seed_all(25)
    sampler = FastKCenterGreedy(embedding=embedding, sampling_ratio=0.06)
    sampler.model.fit(embedding)
    features = sampler.model.transform(embedding)
    start = int(torch.randint(high=len(embedding), size=(1,)))
    fast = coreset.greedy_picks(features, start, sampler.coreset_size, stats=stats)
    assert fast == picks(KCenterGreedy, embedding, 0.06, 25)
    assert stats["hot_picks"] > 0.9 * len(fast) and stats["full_picks"] < 50
    # Far fewer exact distances than stock's N per pick.
    assert stats["exact_rows"] + stats["catch_up_pairs"] < 0.05 * len(embedding) * len(fast)


def test_thread_count_is_restored():
    threads = torch.get_num_threads()
    picks(FastKCenterGreedy, low_rank(4200, 64, 11), 0.01, 11)
    assert torch.get_num_threads() == threads


def test_float64_and_unprojected_embeddings(gathered_calls):
    embedding = low_rank(4200, 96, 7).double()
    assert picks(FastKCenterGreedy, embedding, 0.03, 7) == picks(KCenterGreedy, embedding, 0.03, 7)
    # Stock skips the projection for a 3-d embedding and flattens it instead.
    embedding = low_rank(4300, 120, 8).reshape(4300, 6, 20)
    assert picks(FastKCenterGreedy, embedding, 0.03, 8) == picks(KCenterGreedy, embedding, 0.03, 8)
    assert gathered_calls


def test_sample_coreset_rows_and_rng_stream_equal_stock():
    embedding = low_rank(4500, 64, 9)
    seed_all(9)
    expected = KCenterGreedy(embedding=embedding, sampling_ratio=0.05).sample_coreset()
    after_stock = torch.rand(3), np.random.rand(3)
    for method in coreset.METHODS:
        seed_all(9)
        rows = sample_coreset(embedding, 0.05, method=method)
        assert torch.equal(rows, expected), method
        # Whatever runs after the sampler sees the same global RNG state as after stock.
        after = torch.rand(3), np.random.rand(3)
        assert torch.equal(after[0], after_stock[0]) and np.array_equal(after[1], after_stock[1])
    with pytest.raises(ValueError, match="unknown coreset method"):
        sample_coreset(embedding, 0.05, method="approx")


@pytest.mark.parametrize(("method", "stock_calls", "fast_calls"), [("anomalib", 1, 0), ("fast", 0, 1)])
def test_patchcore_coreset_option_picks_the_sampler(monkeypatch, method, stock_calls, fast_calls):
    from adrun.models.patchcore.lightning import AdrunPatchcore

    calls = {"stock": 0, "fast": 0}
    stock_select, fast_select = KCenterGreedy.select_coreset_idxs, FastKCenterGreedy.select_coreset_idxs

    def spy_stock(self):
        calls["stock"] += 1
        return stock_select(self)

    def spy_fast(self):
        calls["fast"] += 1
        return fast_select(self)

    monkeypatch.setattr(KCenterGreedy, "select_coreset_idxs", spy_stock)
    monkeypatch.setattr(FastKCenterGreedy, "select_coreset_idxs", spy_fast)
    model = AdrunPatchcore(backbone="resnet18", pre_trained=False, coreset=method, visualizer=False)
    embedding = low_rank(500, 384, 10)
    model.model.embedding_store.append(embedding)
    seed_all(10)
    model.fit()
    assert calls == {"stock": stock_calls, "fast": fast_calls}
    seed_all(10)
    assert torch.equal(model.model.memory_bank, KCenterGreedy(embedding, 0.1).sample_coreset())


@pytest.mark.slow
def test_patchcore_fit_and_metrics_equal_stock(tmp_path):
    """A real fit+test: same memory bank, same metrics. 16 train images of 128 px give
    4096 patches, enough for the pruned path."""
    from anomalib.data import MVTecAD
    from anomalib.engine import Engine
    from anomalib.models import Patchcore
    from lightning.pytorch import seed_everything

    from adrun.models.patchcore.lightning import AdrunPatchcore
    from adrun.synthetic import make_dataset

    make_dataset(tmp_path / "data", categories=("tile",), seed=0, image_size=128, n_train=16)
    results = {}
    for name, cls, extra in (("stock", Patchcore, {}), ("fast", AdrunPatchcore, {"coreset": "fast"})):
        seed_everything(0, verbose=False)
        model = cls(
            backbone="resnet18",
            pre_trained=False,
            pre_processor=Patchcore.configure_pre_processor(image_size=(128, 128)),
            visualizer=False,
            **extra,
        )
        datamodule = MVTecAD(root=tmp_path / "data", category="tile", num_workers=0)
        engine = Engine(
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=tmp_path / name,
            accelerator="cpu",
        )
        engine.fit(model=model, datamodule=datamodule)
        metrics = engine.test(model=model, datamodule=datamodule, verbose=False)[0]
        results[name] = (model.model.memory_bank.clone(), metrics)

    (stock_bank, stock_metrics), (fast_bank, fast_metrics) = results["stock"], results["fast"]
    assert stock_bank.shape[0] == 409  # 10% of 4096 patches
    assert torch.equal(fast_bank, stock_bank)
    assert stock_metrics.keys() == fast_metrics.keys() and "pixel_AUROC" in stock_metrics
    for key, value in stock_metrics.items():
        assert fast_metrics[key] == pytest.approx(value, abs=1e-6), key
