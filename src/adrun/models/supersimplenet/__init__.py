"""SuperSimpleNet (anomalib's ``Supersimplenet``): upscaled features, Perlin anomalies, a segmentation head.

anomalib hard-codes the backbone's ``pretrained=True``; adrun builds it untrained without
the network when asked. Runs from 128 px (64 px fails inside its feature upscaling).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from adrun.models import backbone, zoo


class SupersimplenetConfig(backbone.BackboneKeys, zoo.SizeFloor):
    min_image_size: ClassVar[int] = 128
    name: Literal["supersimplenet"]
    perlin_threshold: float = Field(0.2, gt=0, lt=1)
    # torchvision's weights, as the paper used (anomalib's comment: .tv, not .tv2).
    backbone: str = "wide_resnet50_2.tv_in1k"
    layers: list[str] = Field(default_factory=lambda: ["layer2", "layer3"])
    supervised: bool = False
    adapt_cls_features: bool = False


class SupersimplenetSpec(zoo.ZooSpec):
    name = "supersimplenet"
    anomalib_class = "anomalib.models.Supersimplenet"
    config = SupersimplenetConfig
    summary = "feature upscaling, synthetic anomalies, segmentation + classification head (Rolih et al. 2024)"
    backbone_at = "feature_extractor.feature_extractor"
    hard_coded_pretrained = True


SPEC = SupersimplenetSpec()
