"""Coreset selection for Patchcore.

``sample_coreset(embedding, ratio, method)`` returns the coreset rows of ``embedding``.
``method="anomalib"`` is anomalib's ``KCenterGreedy``; ``method="fast"`` returns exactly
the same rows for the same inputs and global RNG state, many times faster on CPU.

Why stock is slow: every pick computes ``linalg.norm(features - center)`` over all N
rows. That allocates a fresh N x D temporary (page faults on every pick) and reads every
row, although after the first picks a new center lowers the min distance of only a few
percent of the points.

Why the fast sampler is exact: the picks are an argmax over float32 min distances, so a
different distance formula (e.g. ||x||^2 - 2x.c + ||c||^2) would flip near-ties. Every
distance that enters ``min_distances`` is therefore computed the stock way,
``vector_norm(x - c)``; torch reduces each row on its own, so a row's float is the same
whether it is computed alone, in a chunk, or among all N (the tests check the picks
against stock). The speed comes from skipping rows that provably cannot change:

- Once, the projected features are projected again, onto their top principal
  directions (``_BOUND_DIMS`` of them). An orthogonal projection never lengthens a
  vector, so ``|z(x) - z(c)| <= |x - c|``: a lower bound at a small fraction of the
  bytes. Patchcore features are highly anisotropic, so the bound is tight.
- Per pick, only rows whose bound is below their current min distance are gathered and
  recomputed exactly; the others would compute a distance >= their min distance, which
  ``torch.minimum`` ignores. The bound is widened by a relative tolerance far above
  float32 rounding (and an absolute slack for rounding in the projection), so rounding
  can only cost a recomputed row, never a skipped change.
- ``min_distances`` is thus bit-identical to stock's after every pick, in the original
  row order, and the argmax is stock's own ``torch.max`` with its tie-breaking.

When the bound does not prune (random, isotropic data; the first picks), the sampler
falls back to a dense pass for a while; that pass is still several times faster than
stock because it works in cache-sized chunks instead of one N x D temporary.

Only CPU runs this path: choosing which rows to gather needs the host to see tensor
values, which on CUDA would be a device sync per pick. On other devices, and for
dtypes other than float32/float64, the stock loop runs: exact and sync-free.

Memory: besides stock's features, the sampler holds N x ``_BOUND_DIMS`` bound
coordinates, a few N-vectors and ~4 MiB chunks: well below stock's N x D temporary.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from anomalib.models.components.sampling import KCenterGreedy

METHODS = ("fast", "anomalib")

# Rows per distance chunk: ~4 MiB, so the temporary stays in cache between sub and norm.
_CHUNK_BYTES = 4 << 20
# Principal directions in the lower bound: 16 of Patchcore's ~260-300 projected dims
# cost 6% of a dense pass and left ~2% of rows to recompute on wide_resnet50_2 features.
_BOUND_DIMS = 16
# Rows used to estimate the principal directions. Any orthonormal basis keeps the
# sampler exact; a better one only prunes more.
_PCA_ROWS = 16384
# If more than this fraction of rows needs recomputing, a dense pass is cheaper than
# gathering them (a gathered row costs ~1.5 dense rows), and the bound is not tried
# again for _DENSE_PICKS picks. Patchcore features stay well below it even on the
# first picks; isotropic random data sits near 1.
_DENSE_FRACTION = 0.5
_DENSE_PICKS = 8
# Below this many rows a dense pass is cheap enough that the bound does not pay.
_MIN_ROWS_FOR_BOUND = 4096


def sample_coreset(embedding: torch.Tensor, sampling_ratio: float, method: str = "fast") -> torch.Tensor:
    """The rows of ``embedding`` that anomalib's k-center-greedy picks, by ``method``."""
    if method not in METHODS:
        raise ValueError(f"unknown coreset method {method!r}; choose one of {METHODS}")
    sampler_class = FastKCenterGreedy if method == "fast" else KCenterGreedy
    return sampler_class(embedding=embedding, sampling_ratio=sampling_ratio).sample_coreset()


class FastKCenterGreedy(KCenterGreedy):
    """anomalib's ``KCenterGreedy`` with an exact, pruned pick loop on CPU."""

    def select_coreset_idxs(self) -> list[int]:
        if self.embedding.device.type != "cpu" or self.embedding.dtype not in (torch.float32, torch.float64):
            return super().select_coreset_idxs()
        # Stock's projection and start draw, in stock's order, so the global RNG
        # stream is consumed identically.
        if self.embedding.ndim == 2:
            self.model.fit(self.embedding)
            self.features = self.model.transform(self.embedding)
        else:
            self.features = self.embedding.reshape(self.embedding.shape[0], -1)
        self.reset_distances()
        start = torch.randint(high=self.n_observations, size=(1,), device=self.features.device).squeeze()
        return greedy_picks(self.features, int(start), self.coreset_size)


def greedy_picks(features: torch.Tensor, start: int, coreset_size: int) -> list[int]:
    """Stock's pick sequence over ``features`` from row ``start``: update, argmax, zero, repeat."""
    picks = [start]
    if coreset_size <= 1:
        return picks
    n, dim = features.shape
    rows = _ExactRows(features)
    bound = _LowerBound(features) if n >= _MIN_ROWS_FOR_BOUND and dim > 4 * _BOUND_DIMS else None
    with _one_thread():
        return _pick_loop(features, picks, coreset_size, rows, bound)


@contextmanager
def _one_thread() -> Iterator[None]:
    """The pick loop is hundreds of small memory-bound ops a second: a second thread
    gains little, and a thread barrier per op costs a lot once another process takes a
    core (measured on 2 shared cores: 200 picks at N=235k in 1.0 s on one thread, 3.8-12 s
    on two). Each row's norm is computed by one thread either way, so results are equal."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _pick_loop(
    features: torch.Tensor, picks: list[int], coreset_size: int, rows: _ExactRows, bound: _LowerBound | None
) -> list[int]:
    n = features.shape[0]
    # The first center sets every distance (stock: min_distances = distances).
    min_distances = torch.empty(n, dtype=features.dtype)
    rows.dense(picks[0], min_distances, first=True)
    dense_until = 0
    for pick in range(1, coreset_size):
        center = picks[-1]
        if pick > 1:
            if bound is None or pick < dense_until:
                rows.dense(center, min_distances)
            else:
                candidates = bound.candidates(center, min_distances)
                if len(candidates) > _DENSE_FRACTION * n:
                    rows.dense(center, min_distances)
                    dense_until = pick + _DENSE_PICKS
                else:
                    rows.gathered(center, candidates, min_distances)
        # Stock's argmax on identical values, so identical ties.
        new = torch.max(min_distances, dim=0).indices
        min_distances[new] = 0.0  # stock zeroes the picked index
        picks.append(int(new))
    return picks


class _ExactRows:
    """Stock's ``vector_norm(x - c)`` on chunks of rows, folded into the min distances."""

    def __init__(self, features: torch.Tensor) -> None:
        self.features = features
        self.chunk = max(64, _CHUNK_BYTES // (features.shape[1] * features.element_size()))
        self.buffer = torch.empty(self.chunk, features.shape[1], dtype=features.dtype)
        self.distances = torch.empty(self.chunk, dtype=features.dtype)

    def dense(self, center: int, min_distances: torch.Tensor, first: bool = False) -> None:
        c = self.features[center]
        for lo in range(0, self.features.shape[0], self.chunk):
            hi = min(lo + self.chunk, self.features.shape[0])
            buffer = torch.sub(self.features[lo:hi], c, out=self.buffer[: hi - lo])
            if first:
                torch.linalg.vector_norm(buffer, dim=1, out=min_distances[lo:hi])
            else:
                distances = torch.linalg.vector_norm(buffer, dim=1, out=self.distances[: hi - lo])
                torch.minimum(min_distances[lo:hi], distances, out=min_distances[lo:hi])

    def gathered(self, center: int, candidates: torch.Tensor, min_distances: torch.Tensor) -> None:
        c = self.features[center]
        for lo in range(0, len(candidates), self.chunk):
            index = candidates[lo : lo + self.chunk]
            buffer = torch.index_select(self.features, 0, index, out=self.buffer[: len(index)])
            buffer.sub_(c)
            distances = torch.linalg.vector_norm(buffer, dim=1, out=self.distances[: len(index)])
            current = min_distances.index_select(0, index)
            min_distances.index_copy_(0, index, torch.minimum(current, distances, out=current))


class _LowerBound:
    """``|z(x) - z(c)|`` for z the projection onto the top principal directions, with
    the slack that makes ``bound > min distance`` prove that stock's float distance is
    at least the min distance too."""

    def __init__(self, features: torch.Tensor) -> None:
        n, dim = features.shape
        # Evenly spaced rows: deterministic, and they span all of Patchcore's images.
        sample = features[:: max(1, n // _PCA_ROWS)].double()
        mean = sample.mean(0)
        centred = sample - mean
        _, vectors = torch.linalg.eigh(centred.T @ centred)
        basis = vectors[:, -_BOUND_DIMS:]  # orthonormal in float64

        # Computed in float64 and rounded once, so z is off by at most eps * |x - mean|.
        self.z = torch.empty(n, _BOUND_DIMS, dtype=features.dtype)
        spread = 0.0
        step = max(64, _CHUNK_BYTES // (dim * 8))
        for lo in range(0, n, step):
            block = features[lo : lo + step].double() - mean
            self.z[lo : lo + step] = block @ basis
            spread = max(spread, float(torch.linalg.vector_norm(block, dim=1).max()))
        self.buffer = torch.empty_like(self.z)
        self.bound = torch.empty(n, dtype=features.dtype)
        self.limit = torch.empty(n, dtype=features.dtype)

        # Stock's float32 norm of D squares is within ~D * eps of the true distance, and
        # so is our float32 bound; 1e-3 on top costs a few recomputed rows. The absolute
        # slack covers rounding z (2 * eps * spread) many times over.
        self.tol = 1e-3 + 8 * dim * torch.finfo(features.dtype).eps
        self.slack = 1e-5 * spread

    def candidates(self, center: int, min_distances: torch.Tensor) -> torch.Tensor:
        """Rows whose min distance the new center might lower, in increasing order."""
        diff = torch.sub(self.z, self.z[center], out=self.buffer)
        bound = torch.linalg.vector_norm(diff, dim=1, out=self.bound)
        # Skip a row only if bound * (1 - tol) - slack >= min_distance * (1 + tol).
        scale = (1 + self.tol) / (1 - self.tol)
        limit = torch.mul(min_distances, scale, out=self.limit).add_(self.slack / (1 - self.tol))
        return torch.nonzero(bound < limit).squeeze(1)
