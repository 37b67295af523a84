"""C-Flow (anomalib's ``Cflow``): conditional normalizing flows over multi-scale encoder features.

It samples ``fiber_batch_size`` feature fibers per layer from each training batch, so
``batch * (image / stride)**2`` must reach it at the deepest layer (stride 32 at
layer4): below 128 px that fails for any batch a smoke run has.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from adrun.models import backbone, zoo

STRIDES = {"layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}  # ResNet feature strides


class CflowConfig(backbone.BackboneKeys, zoo.SizeFloor):
    min_image_size: ClassVar[int] = 128
    name: Literal["cflow"]
    backbone: str = "wide_resnet50_2"
    layers: list[str] = Field(default_factory=lambda: ["layer2", "layer3", "layer4"])
    fiber_batch_size: int = Field(64, ge=1)
    decoder: str = "freia-cflow"
    condition_vector: int = Field(128, ge=1)
    coupling_blocks: int = Field(8, ge=1)
    clamp_alpha: float = Field(1.9, gt=0)
    permute_soft: bool = False
    lr: float = Field(0.0001, gt=0)


class CflowSpec(zoo.ZooSpec):
    name = "cflow"
    anomalib_class = "anomalib.models.Cflow"
    config = CflowConfig
    summary = "conditional normalizing flows (Gudovskiy et al. 2022)"
    backbone_at = "encoder"

    def cell_problems(self, cell: Any) -> list[str]:
        cfg = cell.model
        size = cfg.image_size or self.image_size
        stride = max(STRIDES.get(layer, 1) for layer in cfg.layers)
        fibers = cell.train_batch_size * (size // stride) ** 2
        if fibers < cfg.fiber_batch_size:
            return [
                f"{cell.label}: cflow samples fiber_batch_size ({cfg.fiber_batch_size}) fibers per batch but a "
                f"batch of {cell.train_batch_size} at {size} px gives {fibers} at stride {stride}; raise "
                "train_batch_size or image_size, or lower fiber_batch_size on that model entry"
            ]
        return super().cell_problems(cell)


SPEC = CflowSpec()
