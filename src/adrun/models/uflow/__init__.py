"""U-Flow (anomalib's ``Uflow``): a multi-scale normalizing flow with a-contrario anomaly maps.

anomalib hard-codes pretrained backbones (two CaiTs for ``mcait``, a timm ResNet
otherwise) and ignores the image size in its pre-processor (always 448): adrun builds
untrained backbones without the network when asked and resizes to ``image_size``.
``mcait`` runs at 448 px only.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from adrun.models import backbone, zoo

MCAIT = ("cait_m48_448", "cait_s24_224")  # what anomalib's uflow/feature_extraction.py builds for mcait


class UflowConfig(backbone.BackboneKeys, zoo.SizeFloor):
    name: Literal["uflow"]
    backbone: Literal["mcait", "resnet18", "wide_resnet50_2"] = "mcait"
    flow_steps: int = Field(4, ge=1)
    affine_clamp: float = Field(2.0, gt=0)
    affine_subnet_channels_ratio: float = Field(1.0, gt=0)
    permute_soft: bool = False

    @model_validator(mode="after")
    def _mcait_fixed(self):
        if self.backbone == "mcait" and self.image_size not in (None, 448):
            raise ValueError("backbone mcait runs at image_size: 448 only; use resnet18 or wide_resnet50_2")
        if self.backbone == "mcait" and self.weights is not None:
            raise ValueError("weights: FILE is supported for resnet18 and wide_resnet50_2, not mcait")
        return self


class UflowSpec(zoo.ZooSpec):
    name = "uflow"
    anomalib_class = "anomalib.models.Uflow"
    config = UflowConfig
    summary = "U-shaped normalizing flow, a-contrario maps (Tailanian et al. 2024)"
    image_size = 448
    backbone_at = "feature_extractor"
    hard_coded_pretrained = True

    def pre_processor(self, cls: type[Any], size: int) -> Any:
        # anomalib's configure_pre_processor ignores image_size; the same transform at the asked size.
        from anomalib.pre_processing import PreProcessor
        from torchvision.transforms.v2 import Compose, Normalize, Resize

        return PreProcessor(
            transform=Compose(
                [Resize((size, size), antialias=True), Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])]
            )
        )

    def checks(self, cfg: UflowConfig, label: str, source: str | None) -> dict[str, Any]:
        if cfg.backbone != "mcait" or not cfg.pre_trained:
            return super().checks(cfg, label, source)
        found = [backbone.check(cfg.model_copy(update={"backbone": n}), [], label, source) for n in MCAIT]
        return {"weights": next((c for c in found if not c.ok), found[0])}

    def downloads(self, cfg: UflowConfig) -> list[Any]:
        if cfg.backbone != "mcait":
            return super().downloads(cfg)
        return [d for n in MCAIT for d in backbone.downloads(cfg.model_copy(update={"backbone": n}))]


SPEC = UflowSpec()
