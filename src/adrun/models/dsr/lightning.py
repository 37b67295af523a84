"""anomalib's Dsr with one change: the VQ model comes from adrun (read weights_only, or random), never a download."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

from anomalib.models import Dsr
from torchvision.transforms.v2 import Normalize

from adrun.models.base import MetricsFromConfig

if TYPE_CHECKING:
    import torch


class AdrunDsr(MetricsFromConfig, Dsr):  # type: ignore[misc]  # anomalib's own to_onnx clash
    # The VQ model's state dict the spec read (None: keep the random init). Set after construction.
    vq_state: dict | None = None

    @staticmethod
    def prepare_pretrained_model() -> Path:
        raise RuntimeError("adrun gives DSR its VQ model itself (vq_model:); it never downloads one")

    def on_train_start(self) -> None:
        # anomalib's on_train_start, without its download: the same Normalize rule, then the VQ state.
        from anomalib.data.transforms.utils import extract_transforms_by_type

        if self.pre_processor and extract_transforms_by_type(self.pre_processor.transform, Normalize):
            msg = "Transforms for DSR should not contain Normalize."
            raise ValueError(msg)
        if self.vq_state is not None:
            discrete = cast("torch.nn.Module", self.model.discrete_latent_model)
            discrete.load_state_dict(self.vq_state)
