"""AnomalyDINO (anomalib's ``AnomalyDINO``): a training-free memory bank of DINOv2 patch tokens, kNN cosine scores.

A fit, not a training: anomalib forces one epoch. The encoder is timm's
``vit_small_patch14_dinov2`` (weights ``model.safetensors`` of the Hugging Face repo
``timm/vit_small_patch14_dinov2.lvd142m``), which anomalib always builds pretrained:
adrun checks the cache first and builds it untrained (``pre_trained: false``) or from
``weights: FILE`` without the network. Inputs are center-cropped to a multiple of the
14 px patch; 28 px (a 2 x 2 patch grid) is the smallest that gives an anomaly map.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from adrun.models import vit, zoo

PATCH = 14  # DINOv2's patch size: the crop works on multiples of it


class AnomalyDinoConfig(vit.EncoderKeys, zoo.SizeFloor):
    min_image_size = 2 * PATCH
    name: Literal["anomaly_dino"]
    num_neighbours: int = Field(1, ge=1)
    # anomalib reads the ViT size (small, base, large, ...) from the name to pick the last block.
    encoder_name: str = "vit_small_patch14_dinov2"
    masking: bool = False  # PCA background masking (anomalib's example uses it on capsule, pill, screw...)
    coreset_subsampling: bool = False
    sampling_ratio: float = Field(0.1, gt=0, le=1)
    precision: Literal["float32", "float16"] = "float32"

    @field_validator("encoder_name")
    @classmethod
    def _a_dino(cls, value):
        if "dino" not in value or not any(size in value for size in ("small", "base", "large", "huge", "giant")):
            raise ValueError(
                "must be a timm DINOv2 ViT with its size in the name (e.g. vit_small_patch14_dinov2, "
                "vit_base_patch14_dinov2), as anomalib's AnomalyDINO requires"
            )
        return value


class AnomalyDinoSpec(vit.VitSpec):
    name = "anomaly_dino"
    anomalib_class = "anomalib.models.AnomalyDINO"
    config = AnomalyDinoConfig
    summary = "memory bank of DINOv2 patch tokens, kNN cosine distance (Damm et al. 2025); no training"
    image_size = 252  # anomalib's configure_pre_processor default
    weights = "DINOv2 ViT-S/14 from timm: model.safetensors of timm/vit_small_patch14_dinov2.lvd142m, or weights: FILE"
    encoder_at = "model.feature_encoder"
    forced_epochs = 1


SPEC = AnomalyDinoSpec()
