"""Coreset selection for Patchcore.

``sample_coreset(embedding, ratio, method)`` returns the coreset rows of ``embedding``.
``method="anomalib"`` is anomalib's ``KCenterGreedy``; ``method="fast"`` must return
exactly the same rows for the same inputs and global RNG state.
"""

from __future__ import annotations

import torch
from anomalib.models.components.sampling import KCenterGreedy

METHODS = ("fast", "anomalib")


def sample_coreset(embedding: torch.Tensor, sampling_ratio: float, method: str = "fast") -> torch.Tensor:
    if method not in METHODS:
        raise ValueError(f"unknown coreset method {method!r}; choose one of {METHODS}")
    # TODO(issue 5): the fast sampler. Until it lands, both methods run the stock one.
    return KCenterGreedy(embedding=embedding, sampling_ratio=sampling_ratio).sample_coreset()
