"""MH-PatchCore (anomalib's ``MHPatchcore``): PatchCore with PCA-whitened (Mahalanobis) features and local coresets.

A fit, not a training: three passes over the training set (PCA, covariance, memory bank),
so anomalib forces three epochs. ``--smoke`` cuts the data, never those passes (see
``lightning.py``). Its pre-processor center-crops to 224 px, so images are at least 224.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from adrun.models import backbone, zoo


class MhPatchcoreConfig(backbone.BackboneKeys, zoo.SizeFloor):
    min_image_size: ClassVar[int] = 224  # anomalib's fixed 224 px center crop
    name: Literal["mh_patchcore"]
    backbone: str = "wide_resnet50_2.tv2_in1k"
    layers: list[str] = Field(default_factory=lambda: ["layer2", "layer3"])
    pca_variance_ratio: float = Field(0.99, gt=0, le=1)
    covariance_shrinkage: float = Field(0.07, ge=0, le=1)
    memory_bank_size: int = Field(1000, ge=1)
    local_coreset_size: int = Field(256, ge=1)
    num_neighbors: int = Field(9, ge=1)


class MhPatchcoreSpec(zoo.ZooSpec):
    name = "mh_patchcore"
    anomalib_class = "anomalib.models.MHPatchcore"
    config = MhPatchcoreConfig
    summary = "PatchCore with Mahalanobis-whitened features and local coresets; three fitting passes"
    backbone_at = "feature_extractor"
    forced_epochs = 3

    def lightning_class(self) -> type[Any]:
        from adrun.models.mh_patchcore.lightning import AdrunMHPatchcore

        return AdrunMHPatchcore


SPEC = MhPatchcoreSpec()
