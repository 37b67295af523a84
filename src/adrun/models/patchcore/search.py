"""Patchcore's nearest-neighbour search of the memory bank, the step that scores a patch.

anomalib's ``PatchcoreModel.nearest_neighbors(embedding, 1)`` computes the whole distance
matrix ``sqrt(clamp(||x||^2 - 2 x.y + ||y||^2))`` chunk by chunk, then its row minimum:
after the GEMM, five full passes over a (queries x bank) float matrix (scale, two adds,
clamp, sqrt) and one more for the minimum.

``nearest`` (fp32, the exact path) folds ``||y||^2`` into the GEMM (``addmm``: the bank's
squared norms as its bias, -2 as its scale), takes the row minimum of
``||y||^2 - 2 x.y`` and only then adds ``||x||^2``, clamps and takes the square root, on
one number per query: the same minimum, since ``||x||^2`` is one constant per row and
clamp and sqrt are monotone. The floats differ from stock's by the order of two
additions (a few units in the last place of ``||x||^2``); the bench checks the maps
against stock's (relative 1e-5) and every metric (equal to 4 decimals).

``nearest_bf16`` (``precision: bf16``, opt-in) is a candidate filter: the same form in
bf16 on mean-centred features (distances do not change; the centred numbers are smaller,
so bf16 rounds them less), its ``K`` best rows per query, then the fp32 distance
(stock's formula) to each of those K rows and their minimum. It returns a true fp32
distance to a real bank row; it misses the nearest row only where bf16's rounding
pushes it out of the K best, and then scores a little high. ``stats`` counts, per
query, whether the K-th candidate's bf16 value leaves a margin larger than bf16's
worst-case error: where it does, the result is the exact nearest row, proven.
"""

from __future__ import annotations

import torch

# Queries per GEMM: a 2048 x 24,780 fp32 block is ~200 MB; larger blocks gain nothing.
_CHUNK = 2048
# Candidates re-checked in fp32 per query on the bf16 path.
K = 8
# bf16 keeps 8 significant bits: each input rounds by at most 2**-8 relative.
_BF16_U = 2.0**-8


class Bank:
    """The memory bank with what every search reuses: its squared norms, its bf16 copy."""

    def __init__(self, bank: torch.Tensor) -> None:
        self.bank = bank
        self.squared = bank.pow(2).sum(1)  # as stock computes ||y||^2
        self._bf16: tuple[torch.Tensor, torch.Tensor, torch.Tensor, float] | None = None

    def bf16(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
        """(mean, centred bank in bf16, its squared norms as fp32, the largest centred norm)."""
        if self._bf16 is None:
            mean = self.bank.mean(0)
            centred = self.bank - mean
            low = centred.bfloat16()
            self._bf16 = (mean, low, low.float().pow(2).sum(1), float(centred.norm(dim=1).max()))
        return self._bf16


def nearest(embedding: torch.Tensor, bank: Bank) -> tuple[torch.Tensor, torch.Tensor]:
    """(distance, index) of every row's nearest bank row, fp32; stock's minimum."""
    n = embedding.shape[0]
    scores = torch.empty(n, dtype=embedding.dtype)
    locations = torch.empty(n, dtype=torch.long)
    bias = bank.squared.unsqueeze(0)
    bank_t = bank.bank.T
    for lo in range(0, n, _CHUNK):
        rows = embedding[lo : lo + _CHUNK]
        partial = torch.addmm(bias, rows, bank_t, alpha=-2)  # ||y||^2 - 2 x.y
        value, index = partial.min(1)
        del partial
        scores[lo : lo + len(rows)] = value.add_(rows.pow(2).sum(1)).clamp_min_(0).sqrt_()
        locations[lo : lo + len(rows)] = index
    return scores, locations


def nearest_bf16(
    embedding: torch.Tensor, bank: Bank, stats: dict[str, int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(distance, index) per row: bf16 picks K candidates, fp32 (stock's formula) decides."""
    mean, low, low_squared, bank_norm = bank.bf16()
    n, dim = embedding.shape
    k = min(K, low.shape[0])
    scores = torch.empty(n, dtype=embedding.dtype)
    locations = torch.empty(n, dtype=torch.long)
    bias = low_squared.unsqueeze(0)
    low_t = low.T
    proven = 0
    for lo in range(0, n, _CHUNK):
        rows = embedding[lo : lo + _CHUNK]
        centred = rows - mean
        approx = torch.matmul(centred.bfloat16(), low_t).float()
        approx.mul_(-2).add_(bias)  # ||y - m||^2 - 2 (x - m).(y - m), in bf16's rounding
        best, candidates = approx.topk(k + 1 if k < low.shape[0] else k, dim=1, largest=False)
        del approx
        picked = candidates[:, :k]
        # Stock's formula on the K candidates: ||x||^2 - 2 x.y + ||y||^2, clamped, square root.
        gathered = bank.bank.index_select(0, picked.reshape(-1)).view(len(rows), k, dim)
        dots = torch.bmm(gathered, rows.unsqueeze(2)).squeeze(2)
        exact = dots.mul_(-2).add_(rows.pow(2).sum(1, keepdim=True)).add_(bank.squared[picked])
        exact = exact.clamp_min_(0).sqrt_()
        value, where = exact.min(1)
        scores[lo : lo + len(rows)] = value
        locations[lo : lo + len(rows)] = picked.gather(1, where.unsqueeze(1)).squeeze(1)
        if stats is not None and best.shape[1] > k:
            proven += int(_proven(centred, best[:, k], value, bank_norm).sum())
    if stats is not None:
        stats["queries"] = stats.get("queries", 0) + n
        stats["proven"] = stats.get("proven", 0) + proven
    return scores, locations


def _proven(centred: torch.Tensor, outside: torch.Tensor, found: torch.Tensor, bank_norm: float) -> torch.Tensor:
    """Per query: whether no row outside the K candidates can be nearer than ``found``.

    With x' = x - m and y' = y - m (|y'| <= R), the bf16 value plus |x'|^2 is within
    E = (2u + u^2) R^2 + 2 (3u + u^2 + d 2^-24) (1 + u)^2 |x'| R of the true squared
    distance: the rounded inputs (2u + u^2 each, for ||y'||^2 and x'.y'), the fp32
    accumulation over d terms, and bf16's rounding of the product (u). Every row outside
    the K has a bf16 value of at least ``outside`` (the (K+1)-th smallest), so its true
    squared distance is at least outside + |x'|^2 - E. The fp32 distances carry a
    relative 1e-5 on top.
    """
    u, dim = _BF16_U, centred.shape[1]
    x_norm = centred.norm(dim=1)
    error = (2 * u + u * u) * bank_norm**2 + 2 * (3 * u + u * u + dim * 2.0**-24) * (1 + u) ** 2 * x_norm * bank_norm
    return outside + x_norm.pow(2) - error > found.pow(2) * (1 + 1e-5)
