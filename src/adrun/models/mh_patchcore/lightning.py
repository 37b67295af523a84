"""anomalib's MHPatchcore with one change: its three fitting passes are never cut by a step limit."""

from __future__ import annotations

from typing import Any

from anomalib.models import MHPatchcore

from adrun.models.base import MetricsFromConfig


class AdrunMHPatchcore(MetricsFromConfig, MHPatchcore):  # type: ignore[misc]  # anomalib's own to_onnx clash
    @property
    def trainer_arguments(self) -> dict[str, Any]:
        # Each epoch is one fitting pass (PCA, covariance, memory bank): a max_steps limit
        # (--smoke sets one) would stop it before the memory bank exists, and the test
        # would fail. --smoke still cuts the data, so the passes stay short.
        return {**super().trainer_arguments, "max_steps": -1}
