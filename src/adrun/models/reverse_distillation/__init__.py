"""Reverse Distillation (anomalib's ``ReverseDistillation``): a decoder student rebuilds frozen encoder features.

The decoder exists only for ResNet-family encoders (anomalib's resnet_decoder.py).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from adrun.models import backbone, zoo

# anomalib/models/components/backbone/resnet_decoder.py builds decoders for these only.
DECODERS = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "wide_resnet50_2",
    "wide_resnet101_2",
)


class ReverseDistillationConfig(backbone.BackboneKeys, zoo.SizeFloor):
    name: Literal["reverse_distillation"]
    backbone: str = "wide_resnet50_2"
    layers: list[str] = Field(default_factory=lambda: ["layer1", "layer2", "layer3"])
    anomaly_map_mode: Literal["add", "multiply"] = "add"

    @field_validator("backbone")
    @classmethod
    def _has_decoder(cls, value):
        if value.split(".")[0] not in DECODERS:
            raise ValueError(f"anomalib has a decoder only for {', '.join(DECODERS)}")
        return value


class ReverseDistillationSpec(zoo.ZooSpec):
    name = "reverse_distillation"
    anomalib_class = "anomalib.models.ReverseDistillation"
    config = ReverseDistillationConfig
    summary = "one-class embedding, reverse distillation from a frozen encoder (Deng & Li 2022)"
    backbone_at = "encoder"


SPEC = ReverseDistillationSpec()
