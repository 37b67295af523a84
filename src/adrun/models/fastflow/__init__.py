"""FastFlow (anomalib's ``Fastflow``): 2D normalizing flows over a frozen backbone's features.

Its LayerNorms are sized from the image size at build time; the two ViT backbones need
their native 448 / 384 px inputs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from adrun.models import backbone, zoo

CNNS = ("resnet18", "wide_resnet50_2")
VITS = {"cait_m48_448": 448, "deit_base_distilled_patch16_384": 384}  # anomalib's fastflow/torch_model.py


class FastflowConfig(backbone.BackboneKeys, zoo.SizeFloor):
    name: Literal["fastflow"]
    backbone: str = "resnet18"
    flow_steps: int = Field(8, ge=1)
    conv3x3_only: bool = False
    hidden_ratio: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _backbone_known(self):
        if self.backbone not in CNNS and self.backbone not in VITS:
            raise ValueError(f"fastflow supports backbone {', '.join((*CNNS, *VITS))}, not {self.backbone}")
        if self.backbone in VITS and self.weights is not None:
            raise ValueError(f"weights: FILE is supported for {', '.join(CNNS)} only")
        if self.backbone in VITS and self.image_size not in (None, VITS[self.backbone]):
            raise ValueError(f"{self.backbone} needs image_size: {VITS[self.backbone]}")
        return self


class FastflowSpec(zoo.ZooSpec):
    name = "fastflow"
    anomalib_class = "anomalib.models.Fastflow"
    config = FastflowConfig
    summary = "2D normalizing flows on backbone features (Yu et al. 2021)"
    backbone_at = "feature_extractor"


SPEC = FastflowSpec()
