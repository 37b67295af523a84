"""FRE (anomalib's ``Fre``): a shallow autoencoder on pooled deep features, scored by feature reconstruction error.

``input_dim`` must equal the pooled feature size, channels x (image / stride / kernel)**2
at ``layer``; anomalib's 65536 is resnet50's layer3 at 256 px with kernel 2. adrun
computes the size the cell gives and refuses a mismatch before it runs.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from adrun.models import backbone, zoo


class FreConfig(backbone.BackboneKeys, zoo.SizeFloor):
    name: Literal["fre"]
    backbone: str = "resnet50"
    layer: str = "layer3"
    pooling_kernel_size: int = Field(2, ge=1)
    input_dim: int = Field(65536, ge=1)
    latent_dim: int = Field(220, ge=1)


def pooled_size(name: str, layer: str, image_size: int, kernel: int) -> int | None:
    """channels x side**2 of ``layer``'s features after the pooling; None when timm does not know the layer."""
    import timm
    import torch

    with torch.device("meta"):
        net = timm.create_model(name, pretrained=False, features_only=True)
    for info in net.feature_info.info:  # type: ignore[union-attr]
        if info["module"] == layer:
            side = image_size // info["reduction"] // kernel
            return int(info["num_chs"]) * side * side
    return None


class FreSpec(zoo.ZooSpec):
    name = "fre"
    anomalib_class = "anomalib.models.Fre"
    config = FreConfig
    summary = "feature reconstruction error of a shallow autoencoder (Ndiour et al. 2022)"
    backbone_at = "feature_extractor"
    layers_key = "layer"

    def cell_problems(self, cell: Any) -> list[str]:
        cfg = cell.model
        size = cfg.image_size or self.image_size
        expected = pooled_size(cfg.backbone, cfg.layer, size, cfg.pooling_kernel_size)
        if expected is not None and expected != cfg.input_dim:
            return [
                f"{cell.label}: fre's input_dim {cfg.input_dim} does not match the pooled features of "
                f"{cfg.backbone} {cfg.layer} at {size} px ({expected}); set input_dim: {expected} on that entry"
            ]
        return super().cell_problems(cell)


SPEC = FreSpec()
