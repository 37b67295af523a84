"""Patchcore (anomalib's ``Patchcore``): a memory bank of backbone patch features, scored by nearest neighbour.

adrun runs anomalib's own model with two changes (``lightning.AdrunPatchcore``): the
coreset step may use adrun's exact fast sampler (``coreset.py``: the same picks as
anomalib's k-center-greedy, many times faster on CPU), and the backbone may come from a
local weights file. Everything adrun knows about Patchcore is in this package.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from adrun.models import backbone
from adrun.models.base import ModelSpec

if TYPE_CHECKING:
    from anomalib.metrics import Evaluator

    from adrun.checks import Check, Download


class PatchcoreConfig(backbone.BackboneKeys):
    name: Literal["patchcore"]
    # anomalib's defaults. The real-data configs name "wide_resnet50_2.tv_in1k", the
    # torchvision weights the PatchCore paper used.
    layers: list[str] = Field(default_factory=lambda: ["layer2", "layer3"])
    coreset_sampling_ratio: float = Field(0.1, gt=0, le=1)
    num_neighbors: int = Field(9, ge=1)
    # fast: adrun's exact sampler (same picks); anomalib: the stock KCenterGreedy.
    coreset: Literal["fast", "anomalib"] = "fast"
    # Center crop after resize, as in the paper (256 -> 224). None: no crop.
    center_crop: int | None = Field(None, ge=32)
    # fp32: the exact path (anomalib's results). bf16: the backbone under bf16 autocast,
    # about 2x faster where the CPU has native bf16; metrics move slightly. Without native bf16
    # adrun runs fp32 and the record says so.
    precision: Literal["fp32", "bf16"] = "fp32"


class PatchcoreSpec(ModelSpec):
    name = "patchcore"
    rank = 0  # the founding study's two models come first
    anomalib_class = "anomalib.models.Patchcore"
    config = PatchcoreConfig
    summary = "memory bank of patch features, nearest-neighbour scores (Roth et al. 2022)"
    weights = backbone.WEIGHTS
    offline = backbone.OFFLINE
    unkeyed_defaults = {"precision": "fp32"}  # added later: cells made before it keep their keys
    # adrun's backbone autocast (fp32 / bf16); anomalib's `precision` (the model's dtype) stays float32.
    adrun_keys = ("precision",)

    def build(self, cfg: PatchcoreConfig, exp_dir: Path, evaluator: Evaluator):
        from adrun.models.patchcore.lightning import AdrunPatchcore

        size = cfg.image_size or self.image_size
        crop = (cfg.center_crop, cfg.center_crop) if cfg.center_crop else None
        return AdrunPatchcore(
            backbone=cfg.backbone,
            layers=list(cfg.layers),
            pre_trained=cfg.pre_trained,
            weights=cfg.weights,
            coreset_sampling_ratio=cfg.coreset_sampling_ratio,
            num_neighbors=cfg.num_neighbors,
            coreset=cfg.coreset,
            precision=cfg.precision,
            pre_processor=AdrunPatchcore.configure_pre_processor(image_size=(size, size), center_crop_size=crop),
            evaluator=evaluator,
            visualizer=False,
        )

    def lightning_class(self) -> type[Any]:
        from adrun.models.patchcore.lightning import AdrunPatchcore

        return AdrunPatchcore

    def for_checkpoint(self, cfg: PatchcoreConfig) -> PatchcoreConfig:
        # The checkpoint holds the backbone's weights: build it untrained, so test and
        # predict never reach for the hub or for the original weights file.
        return cfg.model_copy(update={"pre_trained": False, "weights": None})

    def checks(self, cfg: PatchcoreConfig, label: str, source: str | None) -> dict[str, Check]:
        return {"weights": backbone.check(cfg, cfg.layers, label, source)}

    def downloads(self, cfg: PatchcoreConfig) -> list[Download]:
        return backbone.downloads(cfg)

    def sources(self, cfg: PatchcoreConfig) -> dict[str, Any]:
        return {"backbone": backbone.source(cfg)}


SPEC = PatchcoreSpec()
