"""DFM (anomalib's ``Dfm``): PCA of pooled deep features, scored by reconstruction error or likelihood.

A fit (anomalib forces one epoch). ``score_type: nll`` gives no anomaly map: image metrics only.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from adrun.models import backbone, zoo


class DfmConfig(backbone.BackboneKeys, zoo.SizeFloor):
    name: Literal["dfm"]
    backbone: str = "resnet50"
    layer: str = "layer3"
    pooling_kernel_size: int = Field(4, ge=1)
    pca_level: float = Field(0.97, gt=0, le=1)
    score_type: Literal["fre", "nll"] = "fre"


class DfmSpec(zoo.ZooSpec):
    name = "dfm"
    anomalib_class = "anomalib.models.Dfm"
    config = DfmConfig
    summary = "PCA of deep features, feature-reconstruction scores (Ahuja et al. 2019)"
    backbone_at = "feature_extractor"
    layers_key = "layer"
    forced_epochs = 1


SPEC = DfmSpec()
