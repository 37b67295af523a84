"""Coreset selection for Patchcore.

``sample_coreset(embedding, ratio, method)`` returns the coreset rows of ``embedding``.
``method="anomalib"`` is anomalib's ``KCenterGreedy``; ``method="fast"`` returns exactly
the same rows for the same inputs and global RNG state, many times faster on CPU.

Why stock is slow: every pick computes ``linalg.norm(features - center)`` over all N
rows. That allocates a fresh N x D temporary (page faults on every pick) and reads every
row, although after the first picks a new center lowers the min distance of only a few
hundred of the N points.

Why the fast sampler is exact: the picks are an argmax over float32 min distances, so a
different distance formula (e.g. ||x||^2 - 2x.c + ||c||^2) would flip near-ties. Every
distance that enters ``min_distances`` is therefore computed the stock way,
``vector_norm(x - c)``; torch reduces each row on its own, so a row's float is the same
whether it is computed alone, in a chunk, or among all N (the tests check the picks
against stock). ``min`` is exact and order-free, so applying a center to a row late
gives the same float as applying it on time. The speed comes from not touching rows
that provably cannot change, and from not looking at most rows at all:

- The lower bound. Once, the projected features are mapped to 17 numbers per row: the
  coordinates on their top 16 principal directions and the length of what is left.
  That map never lengthens a distance (Pythagoras, then the triangle inequality), so
  ``|z(x) - z(c)| <= |x - c|`` at 6% of the bytes; Patchcore features are highly
  anisotropic, so the bound is tight. A row whose bound is at least its min distance
  cannot change; only the others are gathered and recomputed exactly. Bounds are
  widened by a relative tolerance far above float32 rounding (and an absolute slack
  for rounding in the projection), so rounding can only cost a recomputed row, never a
  skipped change.
- Hot and cold rows. The next pick is the row with the largest min distance, and min
  distances only shrink. So only rows whose min distance is above a threshold ``tau``
  (the hot rows, ~2% of N) are kept up to date pick by pick; while the largest hot
  value is above ``tau`` it is the global argmax, since every cold row was at most
  ``tau`` when last brought up to date. When no hot row is above ``tau`` any more, the
  cold rows catch up on all centers picked since (the bound for many rows x many
  centers as one GEMM per cache-sized tile, on every thread, with the threshold folded
  into the GEMM as two more terms and the few hit rows found by a row maximum before any
  index scan; exact distances only for the few pairs it
  cannot rule out, after a second, 65-number bound of the same kind), a new ``tau`` is
  set, and picking goes on. Ties: hot rows are kept in index order and ``max`` returns
  the first maximum, as stock's argmax over all N does.
- ``min_distances`` is thus bit-identical to stock's for every row whenever that row
  is looked at, and every pick is stock's argmax with stock's tie-breaking.

The first picks, while a new center still lowers many rows, use one pass per pick over
all N (the bound, or a dense pass in cache-sized chunks where the bound does not prune,
as on random isotropic data); that pass is still several times faster than stock.

Only CPU runs this path: choosing which rows to gather needs the host to see tensor
values, which on CUDA would be a device sync per pick. On other devices, and for
dtypes other than float32/float64, the stock loop runs: exact and sync-free.

Memory: besides stock's features, the sampler holds N x 17 bound coordinates, a few
N-vectors, the hot rows' copies and ~4 MiB chunks: well below stock's N x D temporary.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from anomalib.models.components.sampling import KCenterGreedy

METHODS = ("fast", "anomalib")

# Rows per distance chunk: ~4 MiB, so the temporary stays in cache between sub and norm.
_CHUNK_BYTES = 4 << 20
# Principal directions in the lower bound (plus one coordinate for the residual's
# length): 16 of Patchcore's ~300 projected dims left ~0.1% of the rows to recompute
# per pick on wide_resnet50_2 features.
_BOUND_DIMS = 16
# A second, tighter bound for the pairs the first one lets through in a catch-up:
# 64 principal directions (plus the residual), at a fifth of an exact distance's bytes.
_FINE_DIMS = 64
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
# Hot/cold picking starts once a pick recomputes fewer than this fraction of the rows
# (Patchcore features: after a few dozen picks), with this fraction of rows hot.
_HOT_FROM = 0.02
_HOT_FRACTION = 0.02
# Rows x centers per tile of the catch-up GEMM (4096 x 256 fp32 = 4 MiB), and pairs
# per chunk of exact distances.
_TILE_ROWS = 4096
_TILE_CENTERS = 256
_PAIR_CHUNK = 4096

Timer = Callable[[str, float], None]


def sample_coreset(
    embedding: torch.Tensor, sampling_ratio: float, method: str = "fast", timer: Timer | None = None
) -> torch.Tensor:
    """The rows of ``embedding`` that anomalib's k-center-greedy picks, by ``method``.

    ``timer(name, seconds)``, if given, receives the time of the random projection
    ("projection") and of everything else ("coreset").
    """
    if method not in METHODS:
        raise ValueError(f"unknown coreset method {method!r}; choose one of {METHODS}")
    sampler_class = FastKCenterGreedy if method == "fast" else KCenterGreedy
    sampler = sampler_class(embedding=embedding, sampling_ratio=sampling_ratio)
    if timer is None:
        return sampler.sample_coreset()
    projection = time_projection(sampler)
    began = time.perf_counter()
    rows = sampler.sample_coreset()
    total = time.perf_counter() - began
    timer("projection", projection[0])
    timer("coreset", total - projection[0])
    return rows


def time_projection(sampler: KCenterGreedy) -> list[float]:
    """Wrap the sampler's projection so its seconds add up in the returned one-item list."""
    spent = [0.0]
    projection = sampler.model

    def timed(method):
        def run(*args, **kwargs):
            began = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - began

        return run

    projection.fit, projection.transform = timed(projection.fit), timed(projection.transform)  # type: ignore[method-assign]
    return spent


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


def greedy_picks(features: torch.Tensor, start: int, coreset_size: int, stats: dict | None = None) -> list[int]:
    """Stock's pick sequence over ``features`` from row ``start``: update, argmax, zero, repeat.

    ``stats``, if given, is filled with counters of the work done (for tests and benches).
    """
    picks = [start]
    if coreset_size <= 1:
        return picks
    n, dim = features.shape
    rows = _ExactRows(features)
    bound = _LowerBound(features) if n >= _MIN_ROWS_FOR_BOUND and dim > 4 * _BOUND_DIMS else None
    counts = stats if stats is not None else {}
    counts.update(
        full_picks=0,
        dense_picks=0,
        hot_picks=0,
        argmax_picks=0,
        catch_ups=0,
        exact_rows=0,
        catch_up_pairs=0,
        catch_up_s=0.0,
    )
    threads = torch.get_num_threads()
    with _one_thread():
        min_distances = _first_picks(features, picks, coreset_size, rows, bound, counts)
        if len(picks) < coreset_size:
            assert bound is not None  # the first picks build it whenever picks remain
            _HotCold(features, bound, min_distances, counts, threads).run(picks, coreset_size)
    return picks


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


def _first_picks(
    features: torch.Tensor,
    picks: list[int],
    coreset_size: int,
    rows: _ExactRows,
    bound: _LowerBound | None,
    counts: dict,
) -> torch.Tensor:
    """One pass over all rows per pick, until a pick recomputes few rows (then the hot/cold
    loop takes over) or the coreset is complete. Returns the min distances, exact w.r.t.
    every pick so far."""
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
                counts["dense_picks"] += 1
            else:
                candidates = bound.candidates(center, min_distances)
                counts["full_picks"] += 1
                if len(candidates) > _DENSE_FRACTION * n:
                    rows.dense(center, min_distances)
                    dense_until = pick + _DENSE_PICKS
                else:
                    rows.gathered(center, candidates, min_distances)
                    counts["exact_rows"] += len(candidates)
                    if len(candidates) < _HOT_FROM * n:
                        # The hot/cold loop applies this center itself.
                        return min_distances
        # Stock's argmax on identical values, so identical ties.
        new = torch.max(min_distances, dim=0).indices
        min_distances[new] = 0.0  # stock zeroes the picked index
        picks.append(int(new))
    return min_distances


class _HotCold:
    """The pick loop once few rows change per pick (see the module docstring).

    Invariant: ``min_distances`` is exact (stock's float) w.r.t. ``picks[:applied]``
    for every row, and, between catch-ups, the hot copy ``hot_md`` is exact w.r.t. all
    picks so far.
    """

    def __init__(
        self, features: torch.Tensor, bound: _LowerBound, min_distances: torch.Tensor, counts: dict, threads: int = 1
    ):
        self.features = features
        self.threads = threads  # for the catch-ups: few large GEMMs, where a second thread pays
        self.bound = bound
        self.md = min_distances
        self.counts = counts
        z = bound.z
        self.zz = z.double().pow(2).sum(1).to(z.dtype)
        # |z(x) - z(c)|^2 as |z(x)|^2 + |z(c)|^2 - 2 z(x).z(c) is within ~22 u (|z(x)| + |z(c)|)^2
        # of the true square (17-term dot product, three additions); eta is 8x that.
        z_max = float(torch.linalg.vector_norm(z, dim=1).max())
        self.eta = 4e-5 * z_max**2

    def run(self, picks: list[int], coreset_size: int) -> None:
        # _first_picks applied every pick so far to every row.
        applied = len(picks)
        while len(picks) < coreset_size:
            self._catch_up(picks, applied)
            applied = len(picks)
            hot, tau = self._hot_rows()
            if hot is None:
                # No threshold separates the rows (e.g. all min distances equal): every
                # row is exact now, so take stock's argmax over all of them.
                new = torch.max(self.md, dim=0).indices
                self.md[new] = 0.0
                picks.append(int(new))
                self.counts["argmax_picks"] += 1
                continue
            self._hot_picks(picks, coreset_size, hot, tau)

    def _hot_rows(self) -> tuple[torch.Tensor | None, float]:
        n = self.md.shape[0]
        k = max(1, min(n - 1, int(_HOT_FRACTION * n)))
        tau = float(torch.kthvalue(self.md, n - k).values)
        hot = torch.nonzero(self.md > tau).squeeze(1)
        return (hot, tau) if len(hot) else (None, tau)

    def _hot_picks(self, picks: list[int], coreset_size: int, hot: torch.Tensor, tau: float) -> None:
        """Pick from the hot rows while the largest of them beats every cold row."""
        bound, features = self.bound, self.features
        hot_z = bound.z.index_select(0, hot)
        hot_md = self.md.index_select(0, hot)
        buffer = torch.empty_like(hot_z)
        scale, add = bound.scale, bound.add
        try:
            while len(picks) < coreset_size:
                center = picks[-1]
                # The newest center, applied to the hot rows (again, for the first one
                # after a catch-up: min is idempotent).
                distance = torch.linalg.vector_norm(torch.sub(hot_z, bound.z[center], out=buffer), dim=1)
                candidates = torch.nonzero(distance < hot_md * scale + add).squeeze(1)
                if len(candidates):
                    gathered = features.index_select(0, hot[candidates])
                    exact = torch.linalg.vector_norm(gathered.sub_(features[center]), dim=1)
                    hot_md[candidates] = torch.minimum(hot_md[candidates], exact)
                    self.counts["exact_rows"] += len(candidates)
                value, index = torch.max(hot_md, dim=0)
                if not float(value) > tau:
                    return  # a cold row may be the argmax now: catch up first
                hot_md[index] = 0.0
                picks.append(int(hot[index]))
                self.counts["hot_picks"] += 1
        finally:
            self.md.index_copy_(0, hot, hot_md)

    def _catch_up(self, picks: list[int], applied: int) -> None:
        """Apply ``picks[applied:]`` to every row: bound GEMM per tile, exact distances for
        the pairs it cannot rule out."""
        centers = torch.tensor(picks[applied:], dtype=torch.long)
        if len(centers) == 0:
            return
        began = time.perf_counter()
        torch.set_num_threads(self.threads)
        try:
            self._apply(centers)
        finally:
            torch.set_num_threads(1)
            self.counts["catch_ups"] += 1
            self.counts["catch_up_s"] += time.perf_counter() - began

    def _apply(self, centers: torch.Tensor) -> None:
        bound, md, z = self.bound, self.md, self.bound.z
        n = md.shape[0]
        # Pair (x, c) may change x iff |z(x) - z(c)| < md(x) * scale + add. In squares,
        # with eta for the rounding of the GEMM form: 2 z(x).z(c) - |z(c)|^2 > thr(x).
        limit = md * bound.scale + bound.add
        thr = self.zz - limit * limit - self.eta
        # One GEMM gives 2 z(x).z(c) - |z(c)|^2 - thr(x) for a whole tile: rows [2 z(x), thr(x), 1]
        # against columns [z(c), -1, -|z(c)|^2]. Two more terms in the sum: its rounding stays
        # far inside eta (19 terms of at most ~6 max|z|^2 in all: < 1e-5 max|z|^2).
        rows_aug = torch.cat([2 * z, thr.unsqueeze(1), torch.ones_like(thr).unsqueeze(1)], dim=1)
        pair_rows, pair_centers = [], []
        for c_lo in range(0, len(centers), _TILE_CENTERS):
            block = centers[c_lo : c_lo + _TILE_CENTERS]
            zc = z.index_select(0, block)
            cols_aug = torch.cat(
                [zc, torch.full_like(zc[:, :1], -1.0), self.zz.index_select(0, block).neg().unsqueeze(1)], dim=1
            )
            cols_t = cols_aug.T.contiguous()
            for lo in range(0, n, _TILE_ROWS):
                hi = min(lo + _TILE_ROWS, n)
                gram = torch.mm(rows_aug[lo:hi], cols_t)
                # Few rows have a hit: find them with a row maximum (vectorised), then
                # look for the pairs in those rows only (nonzero is a slow scan on CPU).
                rows = torch.nonzero(gram.amax(1) > 0).squeeze(1)
                if len(rows):
                    hits = torch.nonzero(gram.index_select(0, rows) > 0)
                    pair_rows.append(rows[hits[:, 0]] + lo)
                    pair_centers.append(block[hits[:, 1]])
        if not pair_rows:
            return
        rows, cols = torch.cat(pair_rows), torch.cat(pair_centers)
        self.counts["catch_up_pairs"] += len(rows)
        features, fine = self.features, bound.fine
        for lo in range(0, len(rows), _PAIR_CHUNK):
            r, c = rows[lo : lo + _PAIR_CHUNK], cols[lo : lo + _PAIR_CHUNK]
            # The fine bound first (md may have dropped since the tile test, too).
            tight = torch.linalg.vector_norm(fine.index_select(0, r) - fine.index_select(0, c), dim=1)
            keep = torch.nonzero(tight < md.index_select(0, r) * bound.scale + bound.add).squeeze(1)
            if len(keep) == 0:
                continue
            r, c = r[keep], c[keep]
            self.counts["exact_rows"] += len(r)
            # x - c, as stock computes it (features - center).
            exact = torch.linalg.vector_norm(features.index_select(0, r) - features.index_select(0, c), dim=1)
            md.scatter_reduce_(0, r, exact, reduce="amin")


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
    """``|z(x) - z(c)|`` for z the projection onto the top principal directions plus the
    residual's length, with the slack that makes ``bound > min distance`` prove that
    stock's float distance is at least the min distance too."""

    def __init__(self, features: torch.Tensor) -> None:
        n, dim = features.shape
        # Evenly spaced rows: deterministic, and they span all of Patchcore's images.
        sample = features[:: max(1, n // _PCA_ROWS)].double()
        mean = sample.mean(0)
        centred = sample - mean
        _, vectors = torch.linalg.eigh(centred.T @ centred)  # ascending; orthonormal in float64

        # z(x) = (B^T (x - mean), |residual|) for B the top principal directions:
        # |z(x) - z(c)|^2 = |projections' difference|^2
        # + (|r(x)| - |r(c)|)^2 <= |projections' difference|^2 + |r(x) - r(c)|^2 = |x - c|^2.
        # Computed in float64 and rounded once, so z is off by at most eps * |x - mean|.
        # `fine` is the same map with more directions: a tighter bound, for fewer rows.
        # The residual's length by Pythagoras, |r|^2 = |x - mean|^2 - |projection|^2, in float64.
        fine_dims = min(_FINE_DIMS, dim // 2)
        fine_basis = vectors[:, -fine_dims:]  # its last _BOUND_DIMS columns are `basis`
        self.z = torch.empty(n, _BOUND_DIMS + 1, dtype=features.dtype)
        self.fine = torch.empty(n, fine_dims + 1, dtype=features.dtype)
        spread = 0.0
        step = max(64, _CHUNK_BYTES // (dim * 8))
        for lo in range(0, n, step):
            block = features[lo : lo + step].double() - mean
            length = block.pow(2).sum(1)
            projected = block @ fine_basis
            squares = projected.pow(2)
            self.fine[lo : lo + step, :-1] = projected
            self.fine[lo : lo + step, -1] = (length - squares.sum(1)).clamp_min_(0).sqrt_()
            self.z[lo : lo + step, :-1] = projected[:, -_BOUND_DIMS:]
            self.z[lo : lo + step, -1] = (length - squares[:, -_BOUND_DIMS:].sum(1)).clamp_min_(0).sqrt_()
            spread = max(spread, float(length.max()) ** 0.5)
        self.buffer = torch.empty_like(self.z)
        self.bound = torch.empty(n, dtype=features.dtype)
        self.limit = torch.empty(n, dtype=features.dtype)

        # Stock's float32 norm of D squares is within ~D * eps of the true distance, and
        # so is our float32 bound; 1e-3 on top costs a few recomputed rows. The absolute
        # slack covers rounding z (2 * eps * spread per coordinate) many times over.
        self.tol = 1e-3 + 8 * dim * torch.finfo(features.dtype).eps
        self.slack = 1e-5 * spread
        # Skip a row only if bound * (1 - tol) - slack >= min_distance * (1 + tol), i.e.
        # bound >= min_distance * scale + add.
        self.scale = (1 + self.tol) / (1 - self.tol)
        self.add = self.slack / (1 - self.tol)

    def candidates(self, center: int, min_distances: torch.Tensor) -> torch.Tensor:
        """Rows whose min distance the new center might lower, in increasing order."""
        diff = torch.sub(self.z, self.z[center], out=self.buffer)
        bound = torch.linalg.vector_norm(diff, dim=1, out=self.bound)
        limit = torch.mul(min_distances, self.scale, out=self.limit).add_(self.add)
        return torch.nonzero(bound < limit).squeeze(1)
