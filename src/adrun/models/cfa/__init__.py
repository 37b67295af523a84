"""CFA (anomalib's ``Cfa``): coupled-hypersphere feature adaptation on a torchvision backbone.

anomalib builds the backbone with torchvision's DEFAULT weights, which torchvision loads
from its hub cache with an unpickling ``torch.load``. adrun instead builds it with
``weights=None`` and loads the state dict itself with ``weights_only=True``: from
``weights: FILE``, or (``pre_trained: true``) from the file torchvision's URL names in the
torch hub cache, which ``adrun fetch`` downloads. ``pre_trained: false``: untrained.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from adrun import checks
from adrun.checks import Check, Download
from adrun.errors import AdrunError, WeightsError
from adrun.models import backbone, zoo

if TYPE_CHECKING:
    from collections.abc import Iterator


class CfaConfig(backbone.BackboneKeys, zoo.SizeFloor):
    name: Literal["cfa"]
    # torchvision names (anomalib's cfa/torch_model.py SUPPORTED_BACKBONES, less efficientnet_b5, not implemented).
    backbone: Literal["vgg19_bn", "resnet18", "wide_resnet50_2"] = "wide_resnet50_2"
    gamma_c: int = Field(1, ge=1)
    gamma_d: int = Field(1, ge=1)
    num_nearest_neighbors: int = Field(3, ge=1)
    num_hard_negative_features: int = Field(3, ge=1)
    radius: float = Field(1e-05, gt=0)


def hub_file(name: str) -> tuple[str, Path]:
    """torchvision's DEFAULT weights URL for ``name`` and where the torch hub cache keeps it."""
    import torch
    import torchvision

    url = torchvision.models.get_model_weights(name).DEFAULT.url
    return url, Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def state(cfg: CfaConfig) -> dict | None:
    """The backbone's state dict (read with weights_only), checked to fit; None for an untrained one."""
    import torch
    import torchvision

    from adrun.weights import read_state_dict, state_diff

    if cfg.weights is not None:
        path = Path(cfg.weights)
    elif cfg.pre_trained:
        path = hub_file(cfg.backbone)[1]
    else:
        return None
    loaded = read_state_dict(path)
    with torch.device("meta"):
        expected = getattr(torchvision.models, cfg.backbone)(weights=None).state_dict()
    problems = state_diff(loaded, expected)
    if problems:
        raise WeightsError(
            f"weights file {path} does not fit torchvision's {cfg.backbone}: {'; '.join(problems)}; "
            f"pass the state dict of torchvision.models.{cfg.backbone}()"
        )
    return loaded


@contextlib.contextmanager
def torchvision_backbone(loaded: dict | None) -> Iterator[None]:
    """anomalib's CFA builds its backbone through ``get_feature_extractor``: here with ``weights=None`` + ``loaded``."""
    import torchvision
    from anomalib.models.image.cfa import torch_model
    from torchvision.models.feature_extraction import create_feature_extractor

    original = torch_model.get_feature_extractor

    def get_feature_extractor(backbone: str, return_nodes: list[str]) -> Any:
        net = getattr(torchvision.models, backbone)(weights=None)
        if loaded is not None:
            net.load_state_dict(loaded)
        return create_feature_extractor(model=net, return_nodes=return_nodes).eval()

    torch_model.get_feature_extractor = get_feature_extractor
    try:
        yield
    finally:
        torch_model.get_feature_extractor = original


class CfaSpec(zoo.ZooSpec):
    name = "cfa"
    anomalib_class = "anomalib.models.Cfa"
    config = CfaConfig
    summary = "coupled-hypersphere feature adaptation (Lee et al. 2022); torchvision backbone"
    weights = "torchvision backbone (torch hub cache, loaded weights_only), or weights: FILE"

    def building(self, cfg: CfaConfig) -> contextlib.AbstractContextManager:
        return torchvision_backbone(state(cfg))

    def checks(self, cfg: CfaConfig, label: str, source: str | None) -> dict[str, Check]:
        if not cfg.pre_trained and cfg.weights is None:
            return {"weights": Check(True, "untrained (pre_trained: false)")}
        if cfg.weights is None and not hub_file(cfg.backbone)[1].is_file():
            url, path = hub_file(cfg.backbone)
            return {
                "weights": Check(
                    False,
                    "missing",
                    (
                        f"{label}: torchvision's {cfg.backbone} weights are not at {path}; "
                        f"{checks.fetch_hint(source)}, or set weights: FILE or pre_trained: false on that model entry",
                    ),
                )
            }
        try:
            state(cfg)
        except AdrunError as exc:
            return {"weights": Check(False, "bad file", (f"{label}: {exc}; set weights: on that model entry",))}
        return {"weights": Check(True, f"file {Path(cfg.weights).name}" if cfg.weights else "cached")}

    def downloads(self, cfg: CfaConfig) -> list[Download]:
        if not cfg.pre_trained or cfg.weights is not None:
            return []
        url, path = hub_file(cfg.backbone)

        def download() -> None:
            import torch

            path.parent.mkdir(parents=True, exist_ok=True)
            # The URL's name carries the sha256 prefix torchvision publishes; torch checks it.
            torch.hub.download_url_to_file(url, str(path), hash_prefix=path.stem.rsplit("-", 1)[-1])

        return [Download("backbone", path.name, path.parent, path.is_file(), download)]

    def sources(self, cfg: CfaConfig) -> dict[str, Any]:
        if cfg.weights is None and cfg.pre_trained:
            return {"backbone": f"torchvision {cfg.backbone} DEFAULT, file {hub_file(cfg.backbone)[1]} (weights_only)"}
        return {"backbone": backbone.source(cfg)}


SPEC = CfaSpec()
