"""Dinomaly (anomalib's ``Dinomaly``): a ViT decoder trained to rebuild a frozen DINOv2 encoder's features.

The encoder is timm's ``vit_base_patch14_reg4_dinov2`` (weights ``model.safetensors``
of the Hugging Face repo ``timm/vit_base_patch14_reg4_dinov2.lvd142m``), which anomalib
always builds pretrained: adrun checks the cache first and builds it untrained
(``pre_trained: false``) or from ``weights: FILE`` without the network. Only the
bottleneck and decoder train; anomalib's scheduler needs a finite schedule (its paper
setting is ``max_steps: 5000``). Images are resized to ``image_size`` and center-cropped
as anomalib does (448 -> 392): at other sizes adrun keeps that 7/8 ratio, rounded down to
the 14 px patch.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from adrun.models import vit, zoo

PATCH = 14
DEFAULT_SIZE, DEFAULT_CROP = 448, 392  # anomalib's dinomaly/lightning_model.py
FUSED = 8  # anomalib's DEFAULT_FUSE_LAYERS [[0, 1, 2, 3], [4, 5, 6, 7]]
SIZES = ("small", "base", "large", "huge")  # anomalib's DINO_ARCHITECTURES


def crop_size(size: int) -> int:
    """The center crop at ``size``: anomalib's 392 at 448, else the same ratio on the patch grid."""
    if size == DEFAULT_SIZE:
        return DEFAULT_CROP
    return max(PATCH, size * DEFAULT_CROP // DEFAULT_SIZE // PATCH * PATCH)


class DinomalyConfig(vit.EncoderKeys, zoo.SizeFloor):
    min_image_size = 32  # a 28 px crop: a 2 x 2 patch grid
    name: Literal["dinomaly"]
    encoder_name: str = "vit_base_patch14_reg4_dinov2"
    bottleneck_dropout: float = Field(0.2, ge=0, lt=1)
    # anomalib fuses decoder layers 0-3 and 4-7 (its fuse_layer_* arguments are ignored when
    # given, so adrun has no key for them): fewer than 8 layers fail in the first step.
    decoder_depth: int = Field(8, ge=FUSED)
    # None: anomalib's per-size blocks (2..9 for small and base); the encoder side fuses 0-7 too.
    target_layers: list[int] | None = Field(None, min_length=FUSED)
    remove_class_token: bool = False
    use_context_recentering: bool = False
    precision: Literal["float32", "float16"] = "float32"

    @field_validator("encoder_name")
    @classmethod
    def _a_dino(cls, value):
        if "dino" not in value or not any(size in value for size in SIZES):
            raise ValueError(
                f"must be a timm DINOv2 ViT with its size ({', '.join(SIZES)}) in the name "
                "(e.g. vit_base_patch14_reg4_dinov2), as anomalib's Dinomaly requires"
            )
        return value

    @model_validator(mode="after")
    def _recentering_needs_the_class_token(self):
        if self.use_context_recentering and self.remove_class_token:
            raise ValueError("use_context_recentering needs the class token: drop remove_class_token: true")
        return self


class DinomalySpec(vit.VitSpec):
    name = "dinomaly"
    anomalib_class = "anomalib.models.Dinomaly"
    config = DinomalyConfig
    summary = "ViT decoder rebuilding frozen DINOv2 features, linear attention (Guo et al. 2025)"
    image_size = DEFAULT_SIZE
    weights = (
        "DINOv2 ViT-B/14 with registers from timm: model.safetensors of "
        "timm/vit_base_patch14_reg4_dinov2.lvd142m, or weights: FILE"
    )
    encoder_at = "model.encoder"

    def pre_processor(self, cls: type[Any], size: int) -> Any:
        return cls.configure_pre_processor(image_size=(size, size), crop_size=crop_size(size))


SPEC = DinomalySpec()
