"""Patchcore's nearest-neighbour search over the memory bank, faster on CPU.

``Scorer(bank).nearest(embedding)`` returns what anomalib's
``PatchcoreModel.nearest_neighbors(embedding, n_neighbors=1)`` returns: every test
patch's distance to its nearest memory-bank row and that row's index.

Exact path (fp32), equal to anomalib bit for bit. anomalib computes, per chunk of 1024
patches, the whole 1024 x M distance matrix with ``euclidean_dist``: one GEMM, then
five passes over a ~100 MB matrix (scale, two adds, clamp, sqrt) and a sixth for the
row minima, all at memory speed. Here each chunk meets the bank in column tiles of
``TILE`` rows that stay in cache; the same five element-wise steps, in the same order,
run on each tile, and the running minimum keeps the earlier index on ties, as one
``min`` over the whole row does. Same floats, same indices.

That needs the tile's GEMM to produce the same dot products as the full-width GEMM.
MKL does for full 1024-row chunks, but a BLAS may pick its kernel by shape, so the
first full chunk scored against a bank is computed both ways and compared; where they
differ, that bank is scored by anomalib's own code. Chunks of another height (the last
one of a batch, tiny test images) always go through anomalib's code.

bf16 (``precision: bf16``) does not change this search. A bf16 GEMM with worst-case
error bounds as a candidate filter was tried: on Patchcore-like test features its
bounds still sent 94% of the (chunk, tile) pairs to the fp32 pass, so it cost more than
the exact tiled search alone and was dropped.
"""

from __future__ import annotations

import logging

import torch
from anomalib.models.image.patchcore.torch_model import DEFAULT_CHUNK_SIZE, PatchcoreModel

logger = logging.getLogger(__name__)

# Bank rows per tile: 1024 x 512 fp32 is 2 MB, an L2's worth.
TILE = 512


class Scorer:
    """Nearest memory-bank row for each patch; one per memory bank (it caches the bank's norms)."""

    def __init__(self, bank: torch.Tensor) -> None:
        self.bank = bank
        # anomalib computes y_norm the same way for every chunk; once is enough.
        self.bank_norm = bank.pow(2).sum(dim=-1, keepdim=True)
        self.tiled_equal: bool | None = None  # None until the first full chunk was compared
        self.stats = {"chunks": 0, "tiled": 0, "stock": 0}

    def nearest(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = embedding.shape[0]
        if self.bank.device.type != "cpu" or self.bank.dtype != torch.float32:
            return _stock(embedding, self.bank)
        scores, locations = [], []
        for lo in range(0, n, DEFAULT_CHUNK_SIZE):
            chunk = embedding[lo : lo + DEFAULT_CHUNK_SIZE]
            s, i = self._chunk(chunk, full=n > DEFAULT_CHUNK_SIZE and len(chunk) == DEFAULT_CHUNK_SIZE)
            scores.append(s)
            locations.append(i)
        if len(scores) == 1:
            return scores[0], locations[0]
        return torch.cat(scores), torch.cat(locations)

    def _chunk(self, chunk: torch.Tensor, full: bool) -> tuple[torch.Tensor, torch.Tensor]:
        self.stats["chunks"] += 1
        if not full or self.tiled_equal is False:
            self.stats["stock"] += 1
            return _stock(chunk, self.bank)
        result = self._tiled(chunk)
        if self.tiled_equal is None:
            expected = _stock(chunk, self.bank)
            self.tiled_equal = torch.equal(result[0], expected[0]) and torch.equal(result[1], expected[1])
            if not self.tiled_equal:
                logger.info("tiled nearest-neighbour GEMM differs from the full-width one here; using anomalib's")
                self.stats["stock"] += 1
                return expected
        self.stats["tiled"] += 1
        return result

    def _tiled(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """anomalib's ``euclidean_dist(x, bank).min(1)``, one cache-sized tile of the bank at a time."""
        x_norm = x.pow(2).sum(dim=-1, keepdim=True)
        best_value = best_index = None
        m = self.bank.shape[0]
        for lo in range(0, m, TILE):
            hi = min(lo + TILE, m)
            res = torch.matmul(x, self.bank[lo:hi].transpose(-2, -1))
            res.mul_(-2)
            res.add_(x_norm)
            res.add_(self.bank_norm[lo:hi].transpose(-2, -1))
            value, index = res.clamp_min_(0).sqrt_().min(1)
            if best_value is None:
                best_value, best_index = value, index
            else:
                # Strictly smaller only: on a tie the earlier tile (smaller index) stays.
                better = value < best_value
                best_value = torch.where(better, value, best_value)
                best_index = torch.where(better, index + lo, best_index)
        return best_value, best_index


def _stock(x: torch.Tensor, bank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return PatchcoreModel.euclidean_dist(x, bank).min(1)
