"""CS-Flow (anomalib's ``Csflow``): a cross-scale normalizing flow over EfficientNet-B5 features at three scales.

anomalib hard-codes torchvision's ``efficientnet_b5(weights=IMAGENET1K_V1)``, which
torchvision loads from its hub cache with an unpickling ``torch.load``. As for CFA, adrun
builds it with ``weights=None`` and loads the state dict itself with ``weights_only=True``:
from ``weights: FILE``, or (``pre_trained: true``) from the file torchvision's URL names in
the torch hub cache, which ``adrun fetch`` downloads. ``pre_trained: false``: untrained.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator

from adrun.models import backbone, cfa, zoo

if TYPE_CHECKING:
    from collections.abc import Iterator


class CsflowConfig(backbone.BackboneKeys, zoo.SizeFloor):
    # Three scales (1, 1/2, 1/4) at stride 32, each half the one before: the side must divide by 128.
    min_image_size: ClassVar[int] = 128
    name: Literal["csflow"]
    # anomalib's CsFlowMultiScaleFeatureExtractor knows this one backbone (features.6.8).
    backbone: Literal["efficientnet_b5"] = "efficientnet_b5"
    cross_conv_hidden_channels: int = Field(1024, ge=1)
    n_coupling_blocks: int = Field(4, ge=1)
    clamp: int = Field(3, ge=1)
    num_channels: int = Field(3, ge=1)

    @field_validator("image_size")
    @classmethod
    def _scales_fit(cls, value):
        if value is not None and value % 128:
            raise ValueError("must be a multiple of 128 for csflow (its three feature scales must halve exactly)")
        return value


@contextlib.contextmanager
def torchvision_efficientnet(loaded: dict | None) -> Iterator[None]:
    """anomalib's CS-Flow calls ``efficientnet_b5(weights=...)``: here with ``weights=None`` + ``loaded``."""
    import torchvision
    from anomalib.models.image.csflow import torch_model

    original = torch_model.efficientnet_b5

    def efficientnet_b5(**_: Any) -> Any:
        net = torchvision.models.efficientnet_b5(weights=None)
        if loaded is not None:
            net.load_state_dict(loaded)
        return net

    torch_model.efficientnet_b5 = efficientnet_b5
    try:
        yield
    finally:
        torch_model.efficientnet_b5 = original


class CsflowSpec(cfa.CfaSpec):
    """CFA's torchvision checks, downloads and provenance, for CS-Flow's one backbone."""

    name = "csflow"
    anomalib_class = "anomalib.models.Csflow"
    config = CsflowConfig  # type: ignore[assignment]  # CFA's methods read only backbone, pre_trained, weights
    summary = "cross-scale normalizing flow on EfficientNet-B5 features (Rudolph et al. 2022)"
    weights = cfa.CfaSpec.weights

    def building(self, cfg: Any) -> contextlib.AbstractContextManager:
        return torchvision_efficientnet(cfa.state(cfg))


SPEC = CsflowSpec()
