"""adrun's subclass of anomalib's EfficientAd: where the teacher comes from.

The architecture, losses and metrics are anomalib's own. ``SPEC.build`` is the one
place that constructs it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from anomalib.models import EfficientAd

from adrun.models.base import MetricsFromConfig
from adrun.models.efficient_ad.teacher import load_teacher

logger = logging.getLogger(__name__)


class AdrunEfficientAd(MetricsFromConfig, EfficientAd):  # type: ignore[misc]  # anomalib's own to_onnx clash
    """EfficientAd whose teacher comes from ``teacher``.

    - ``"auto"``: anomalib's cache, downloading into it when missing (stock behaviour).
    - ``"random"``: keep the teacher's seeded random initialisation. The anomaly maps
      are then meaningless beyond wiring: fit for smoke tests only.
    - a path: a state dict for ``model.teacher``, loaded with ``weights_only=True``.
    """

    def __init__(self, *args, teacher: str = "auto", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.teacher = str(teacher)

    def prepare_pretrained_model(self) -> None:
        if self.teacher == "auto":
            super().prepare_pretrained_model()
        elif self.teacher == "random":
            logger.warning("EfficientAd: random teacher (teacher: random) - results are fit for smoke tests only.")
        else:
            size = getattr(self.model_size, "value", self.model_size)
            load_teacher(self.model.teacher, Path(self.teacher), device=self.device, model_size=str(size))
