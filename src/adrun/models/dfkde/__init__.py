"""DFKDE (anomalib's ``Dfkde``): a Gaussian KDE over PCA-reduced pooled features, one per image.

Image scores only (no anomaly map): pixel metrics are not available. The KDE needs more
training images than ``n_pca_components``: with fewer, anomalib silently leaves it
unfitted and validation fails; with as many, the projected features' covariance is
singular and its Cholesky fails (seen). adrun refuses such a cell before it runs.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from adrun.models import backbone, zoo


class DfkdeConfig(backbone.BackboneKeys, zoo.SizeFloor):
    name: Literal["dfkde"]
    backbone: str = "resnet18"
    layers: list[str] = Field(default_factory=lambda: ["layer4"])
    n_pca_components: int = Field(16, ge=1)
    feature_scaling_method: Literal["norm", "scale"] = "scale"
    max_training_points: int = Field(40000, ge=1)


class DfkdeSpec(zoo.ZooSpec):
    name = "dfkde"
    anomalib_class = "anomalib.models.Dfkde"
    config = DfkdeConfig
    summary = "kernel density estimate of deep features; image scores only"
    backbone_at = "feature_extractor"
    forced_epochs = 1

    def cell_problems(self, cell: Any) -> list[str]:
        n_train = train_images(cell)
        if n_train is not None and n_train <= cell.model.n_pca_components:
            return [
                f"{cell.label}: dfkde needs more training images than n_pca_components "
                f"({cell.model.n_pca_components}) and this cell has {n_train}; set n_pca_components: "
                f"{max(n_train - 1, 1)} or fewer on that model entry"
            ]
        return super().cell_problems(cell)


def train_images(cell: Any) -> int | None:
    """The training images a cell has, where the config says (smoke subset, generated data); None: unknown."""
    counts = []
    if cell.smoke:
        counts.append(cell.smoke_settings.n_train)
    if cell.data.format == "synthetic":
        counts.append(cell.data.synthetic.n_train)
    return min(counts) if counts else None


SPEC = DfkdeSpec()
