"""PaDiM (anomalib's ``Padim``): a Gaussian per patch position over backbone features, scored by Mahalanobis distance.

A fit, not a training: anomalib forces one epoch. ``n_features`` (the random channel
subset) has defaults only for resnet18 (100) and wide_resnet50_2 (550).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from adrun.models import backbone, zoo

# anomalib's padim/torch_model.py knows the feature count only for these two.
DEFAULT_N_FEATURES = ("resnet18", "wide_resnet50_2")


class PadimConfig(backbone.BackboneKeys, zoo.SizeFloor):
    name: Literal["padim"]
    backbone: str = "resnet18"
    layers: list[str] = Field(default_factory=lambda: ["layer1", "layer2", "layer3"])
    n_features: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _n_features_known(self):
        if self.n_features is None and self.backbone not in DEFAULT_N_FEATURES:
            raise ValueError(
                f"n_features has no default for backbone {self.backbone} (only for "
                f"{', '.join(DEFAULT_N_FEATURES)}); set n_features: on that model entry"
            )
        return self


class PadimSpec(zoo.ZooSpec):
    name = "padim"
    anomalib_class = "anomalib.models.Padim"
    config = PadimConfig
    summary = "multivariate Gaussian per patch, Mahalanobis scores (Defard et al. 2021)"
    backbone_at = "feature_extractor"
    forced_epochs = 1


SPEC = PadimSpec()
