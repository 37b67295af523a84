"""Patchcore's nearest-neighbour search of the memory bank, the step that scores a patch.

anomalib's ``PatchcoreModel.nearest_neighbors(embedding, 1)`` computes the whole distance
matrix ``sqrt(clamp(||x||^2 - 2 x.y + ||y||^2))`` chunk by chunk, then its row minimum:
after the GEMM, five full passes over a (queries x bank) float matrix (scale, two adds,
clamp, sqrt) and one more for the minimum.

``nearest`` (fp32, the exact path) folds ``||y||^2`` into the GEMM (the bank's squared
norms as its bias, -2 times the bank as its weights), takes the row minimum of
``||y||^2 - 2 x.y``: the same row as stock's minimum, since ``||x||^2`` is one constant
per query and clamp and sqrt are monotone. It then computes the distance to that one
row directly, ``||x - y||``: no cancellation, so it is within fp32 rounding (~1e-7
relative) of the true distance. Stock's ``||x||^2 - 2 x.y + ||y||^2`` cancels where
a patch lies near a bank row: on this project's bench it was up to ~1e-4 relative from
the float64 distance, so stock's and adrun's distances differ by stock's own error there.
The bench measures both against float64 and checks every metric (equal to 4 decimals).

``nearest_bf16`` (``precision: bf16``, opt-in) is a candidate filter: the same form in
bf16 on mean-centred features (distances do not change; the centred numbers are smaller,
so bf16 rounds them less), its ``K`` best rows per query, then the direct fp32 distance
``||x - y||`` to each of those K rows and their minimum. It returns a true fp32
distance to a real bank row; it misses the nearest row only where bf16's rounding
pushes it out of the K best, and then scores a little high. ``stats`` counts, per
query, whether the K-th candidate's bf16 value leaves a margin larger than bf16's
worst-case error: where it does, the result is the exact nearest row, proven.

The GEMM itself runs on the faster of two CPU kernels, measured once per process on this
machine (``gemm_kernel``): oneDNN's (``torch.ops.mkldnn._linear_pointwise``, the bank's
squared norms as its bias) or the BLAS behind ``torch.addmm`` (MKL in PyPI's torch). On
an AMD EPYC (Zen 5) oneDNN's fp32 GEMM ran at 323-352 GFLOPS and MKL's at 124-157 for
these shapes; Intel's MKL is strong on Intel. Both compute the same sums in fp32; they
differ only in the order of the additions.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

# Queries per GEMM: a 1024 x 24,780 fp32 block is ~100 MB; oneDNN is fastest at 256-1024.
_CHUNK = 1024
# Candidates re-checked in fp32 per query on the bf16 path.
K = 8
# bf16 keeps 8 significant bits: each input rounds by at most 2**-8 relative.
_BF16_U = 2.0**-8
# The kernel each dtype's GEMM runs on in this process, measured once ("onednn" or "blas").
_KERNELS: dict[torch.dtype, str] = {}

Gemm = Callable[[torch.Tensor], torch.Tensor]


def _onednn(rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """bias + rows @ weight.T in one oneDNN call (the output in rows' dtype)."""
    return torch.ops.mkldnn._linear_pointwise(rows, weight, bias, "none", [], "")


def _blas(rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """bias + rows @ weight.T through torch's BLAS (bf16: torch's matmul, widened to fp32, plus the bias)."""
    if rows.dtype == torch.float32:
        return torch.addmm(bias.unsqueeze(0), rows, weight.T)
    return torch.matmul(rows, weight.T).float().add_(bias.unsqueeze(0))


def _has_onednn() -> bool:
    return bool(getattr(torch._C, "_has_mkldnn", False)) and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def gemm_kernel(dtype: torch.dtype = torch.float32, dim: int = 1536) -> str:
    """The faster GEMM kernel for ``dtype`` on this CPU: timed once per process, then kept.

    Each candidate computes one (256 x dim) @ (dim x 4096) block three times (about 3
    GFLOP); the smallest time wins. A kernel that is missing or raises is never chosen.
    """
    if dtype not in _KERNELS:
        _KERNELS[dtype] = _measure(dtype, dim)
    return _KERNELS[dtype]


def _measure(dtype: torch.dtype, dim: int) -> str:
    if not _has_onednn():
        return "blas"
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(256, dim, generator=generator).to(dtype)
    weight = torch.randn(4096, dim, generator=generator).to(dtype)
    bias = torch.randn(4096, generator=generator)
    best: dict[str, float] = {}
    for name, kernel in (("onednn", _onednn), ("blas", _blas)):
        try:
            kernel(rows, weight, bias)
            times = []
            for _ in range(3):
                began = time.perf_counter()
                kernel(rows, weight, bias)
                times.append(time.perf_counter() - began)
        except (RuntimeError, NotImplementedError):
            continue
        best[name] = min(times)
    return min(best, key=best.__getitem__) if best else "blas"


def _gemm(weight: torch.Tensor, bias: torch.Tensor) -> tuple[Gemm, str]:
    """(rows -> bias + rows @ weight.T, the kernel's name): the kernel measured fastest for weight's dtype."""
    name = gemm_kernel(weight.dtype, weight.shape[1])
    kernel = _onednn if name == "onednn" else _blas
    return (lambda rows: kernel(rows.contiguous(), weight, bias)), name


class Bank:
    """The memory bank with what every search reuses: its fp32 GEMM, its bf16 GEMM, built on first use."""

    def __init__(self, bank: torch.Tensor) -> None:
        self.bank = bank
        self._fp32: Gemm | None = None
        self._bf16: tuple[torch.Tensor, Gemm, float] | None = None
        self.kernels: dict[str, str] = {}  # the GEMM kernel each search used, for the record

    def gemm(self) -> Gemm:
        """rows -> ||y||^2 - 2 x.y for every bank row y (scaling by -2 is exact in floats)."""
        if self._fp32 is None:
            squared = self.bank.pow(2).sum(1)  # as stock computes ||y||^2
            self._fp32, self.kernels["fp32"] = _gemm(self.bank.mul(-2).contiguous(), squared)
        return self._fp32

    def bf16(self) -> tuple[torch.Tensor, Gemm, float]:
        """(mean, centred rows -> bf16 ||y'||^2 - 2 x'.y' with ||y'||^2 in fp32, the largest centred norm)."""
        if self._bf16 is None:
            mean = self.bank.mean(0)
            centred = self.bank - mean
            low = centred.bfloat16()
            squared = low.float().pow(2).sum(1)
            gemm, self.kernels["bf16"] = _gemm(low.mul(-2).contiguous(), squared)
            self._bf16 = (mean, gemm, float(centred.norm(dim=1).max()))
        return self._bf16


def nearest(embedding: torch.Tensor, bank: Bank) -> tuple[torch.Tensor, torch.Tensor]:
    """(distance, index) of every row's nearest bank row, fp32: stock's minimum, its distance computed directly."""
    n = embedding.shape[0]
    scores = torch.empty(n, dtype=embedding.dtype)
    locations = torch.empty(n, dtype=torch.long)
    gemm = bank.gemm()
    for lo in range(0, n, _CHUNK):
        rows = embedding[lo : lo + _CHUNK]
        partial = gemm(rows)  # ||y||^2 - 2 x.y
        index = partial.min(1).indices  # as stock picks it (min, not argmin)
        del partial
        scores[lo : lo + len(rows)] = torch.linalg.vector_norm(rows - bank.bank.index_select(0, index), dim=1)
        locations[lo : lo + len(rows)] = index
    return scores, locations


def nearest_bf16(
    embedding: torch.Tensor, bank: Bank, stats: dict[str, int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(distance, index) per row: bf16 picks K candidates, their direct fp32 distances decide."""
    mean, gemm, bank_norm = bank.bf16()
    n, dim = embedding.shape
    size = bank.bank.shape[0]
    k = min(K, size)
    scores = torch.empty(n, dtype=embedding.dtype)
    locations = torch.empty(n, dtype=torch.long)
    proven = 0
    for lo in range(0, n, _CHUNK):
        rows = embedding[lo : lo + _CHUNK]
        centred = rows - mean
        # ||y - m||^2 - 2 (x - m).(y - m): bf16 inputs, fp32 sums, rounded once to bf16.
        approx = gemm(centred.bfloat16())
        best, candidates = approx.topk(k + 1 if k < size else k, dim=1, largest=False)
        del approx
        picked = candidates[:, :k]
        # The direct fp32 distance ||x - y|| to each of the K candidates.
        gathered = bank.bank.index_select(0, picked.reshape(-1)).view(len(rows), k, dim)
        exact = torch.linalg.vector_norm(gathered.sub_(rows.unsqueeze(1)), dim=2)
        value, where = exact.min(1)
        scores[lo : lo + len(rows)] = value
        locations[lo : lo + len(rows)] = picked.gather(1, where.unsqueeze(1)).squeeze(1)
        if stats is not None and best.shape[1] > k:
            proven += int(_proven(centred, best[:, k].float(), value, bank_norm).sum())
    if stats is not None:
        stats["queries"] = stats.get("queries", 0) + n
        stats["proven"] = stats.get("proven", 0) + proven
    return scores, locations


def _proven(centred: torch.Tensor, outside: torch.Tensor, found: torch.Tensor, bank_norm: float) -> torch.Tensor:
    """Per query: whether no row outside the K candidates can be nearer than ``found``.

    With x' = x - m and y' = y - m (|y'| <= R), the bf16 value plus |x'|^2 is within
    E = (2u + u^2 + u (1 + u)^2 + s) R^2 + 2 (3u + u^2 + s) (1 + u)^2 |x'| R, s = (d + 1) 2^-24, of
    the true squared distance: the rounded inputs (2u + u^2 each, for ||y'||^2 and
    x'.y'), the fp32 sums over d terms and the bias (s), and bf16's one rounding of the
    output ||y'||^2 - 2 x'.y' (u times at most R^2 + 2 |x'| R, with the rounded inputs'
    (1 + u)^2). Every row outside the K has a bf16 value of at least ``outside`` (the
    (K+1)-th smallest), so its true squared distance is at least outside + |x'|^2 - E.
    The fp32 distances carry a relative 1e-5 on top.
    """
    u, dim = _BF16_U, centred.shape[1]
    x_norm = centred.norm(dim=1)
    grow = (1 + u) ** 2
    sums = (dim + 1) * 2.0**-24
    error = (2 * u + u * u + u * grow + sums) * bank_norm**2 + 2 * (3 * u + u * u + sums) * grow * x_norm * bank_norm
    return outside + x_norm.pow(2) - error > found.pow(2) * (1 + 1e-5)
