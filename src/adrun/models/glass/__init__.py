"""GLASS (anomalib's ``Glass``): a patch discriminator trained on global and local synthetic anomalies.

Its local anomalies are Perlin masks filled from texture images (DTD, like DRAEM):
``anomaly_source_path``; null (anomalib's default) uses Perlin noise alone. anomalib
downloads DTD from its constructor whenever that path is not an existing folder; adrun never
lets it: preflight refuses a missing folder, ``adrun fetch`` downloads DTD there on request.

anomalib's own ``pre_trained=False`` also trains the backbone, and fails in anomalib 2.7
(``configure_optimizers`` asks ``TimmFeatureExtractor.backbone``, the model's name, for its
parameters). So adrun always takes anomalib's frozen-backbone path, and ``pre_trained:
false`` means what it means for every other model: the backbone is built untrained (no
network); ``weights: FILE`` builds it untrained, then adrun loads the file with
``weights_only=True``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from adrun import checks
from adrun.checks import Check, Download
from adrun.errors import DataError
from adrun.models import backbone, zoo
from adrun.models.draem import DTD_URL


class GlassConfig(backbone.BackboneKeys, zoo.SizeFloor):
    name: Literal["glass"]
    # A folder of texture images (e.g. the extracted DTD); null: Perlin noise only (anomalib's default).
    anomaly_source_path: str | None = None
    backbone: str = "wide_resnet50_2"
    # null: anomalib's layer2 + layer3.
    layers: list[str] | None = None
    pretrain_embed_dim: int = Field(1536, ge=1)
    target_embed_dim: int = Field(1536, ge=1)
    patchsize: int = Field(3, ge=1)
    patchstride: int = Field(1, ge=1)
    pre_projection: int = Field(1, ge=0)
    discriminator_layers: int = Field(2, ge=1)
    discriminator_hidden: int = Field(1024, ge=1)
    learning_rate: float = Field(0.0001, gt=0)
    # Gradient-ascent steps per batch for the global (feature-space) anomalies.
    step: int = Field(20, ge=0)
    svd: int = Field(0, ge=0)
    gaussian_noise_std: float = Field(0.015, ge=0)
    radius_quantile: float = Field(0.75, gt=0, le=1)
    focal_loss_quantile_threshold: float = Field(0.5, gt=0, le=1)
    mining: bool = True


class GlassSpec(zoo.ZooSpec):
    name = "glass"
    anomalib_class = "anomalib.models.Glass"
    config = GlassConfig
    summary = "global and local anomaly co-synthesis for a patch discriminator (Chen et al. 2024)"
    image_size = 288  # anomalib's input_shape default
    backbone_at = "forward_modules.feature_aggregator"
    hard_coded_pretrained = True  # anomalib's pre_trained=True, always: untrained() when asked
    # input_shape is the image size (adrun's image_size), never a key of its own.
    adrun_keys: ClassVar[tuple[str, ...]] = ("input_shape",)

    def kwargs(self, cfg: GlassConfig, exp_dir: Path) -> dict[str, Any]:
        out = super().kwargs(cfg, exp_dir)
        size = cfg.image_size or self.image_size
        out["input_shape"] = (size, size)
        # anomalib's frozen-backbone path always (its pre_trained=False one fails, see above).
        out["pre_trained"] = True
        if cfg.anomaly_source_path is not None and not Path(cfg.anomaly_source_path).is_dir():
            # preflight refuses this; never let anomalib download
            raise DataError(
                f"anomaly_source_path {cfg.anomaly_source_path} is not a folder; run `adrun fetch` or set "
                "anomaly_source_path: null"
            )
        return out

    def checks(self, cfg: GlassConfig, label: str, source: str | None) -> dict[str, Check]:
        layers = cfg.layers or ["layer2", "layer3"]
        return {"weights": backbone.check(cfg, layers, label, source), "textures": _textures(cfg, label, source)}

    def downloads(self, cfg: GlassConfig) -> list[Download]:
        out = backbone.downloads(cfg)
        if cfg.anomaly_source_path is not None:
            folder = Path(cfg.anomaly_source_path)

            def download() -> None:
                from anomalib.data.utils import download_and_extract
                from anomalib.models.image.glass.lightning_model import DTD_DOWNLOAD_INFO

                download_and_extract(folder, DTD_DOWNLOAD_INFO)

            out.append(Download("textures", "DTD", folder, folder.is_dir(), download))
        return out

    def probe_urls(self) -> tuple[str, ...]:
        return (DTD_URL,)

    def sources(self, cfg: GlassConfig) -> dict[str, Any]:
        path = cfg.anomaly_source_path
        textures = "none (Perlin noise)" if path is None else str(Path(path).resolve())
        return {"backbone": backbone.source(cfg), "textures": textures}


def _textures(cfg: GlassConfig, label: str, source: str | None) -> Check:
    if cfg.anomaly_source_path is None:
        return Check(True, "none (Perlin noise)")
    folder = Path(cfg.anomaly_source_path)
    if folder.is_dir():
        return Check(True, "found")
    what = "is a file" if folder.exists() else "does not exist"
    return Check(
        False,
        "missing",
        (
            f"{label}: anomaly_source_path {folder} {what} (anomalib would download DTD into it); "
            f"{checks.fetch_hint(source)}, or set anomaly_source_path: null (Perlin noise only) on that model entry",
        ),
    )


SPEC = GlassSpec()
