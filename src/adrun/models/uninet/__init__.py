"""UniNet (anomalib's ``UniNet``): a contrastive student-teacher pair; torchvision teachers, a ResNet decoder student.

anomalib builds both teachers (source and target) with torchvision's DEFAULT weights, which
torchvision loads from its hub cache with an unpickling ``torch.load``. As for CFA, adrun
builds them with ``weights=None`` and loads the state dict itself with ``weights_only=True``:
from ``weights: FILE``, or (``pre_trained: true``) from the file torchvision's URL names in
the torch hub cache, which ``adrun fetch`` downloads. ``pre_trained: false``: untrained.

Its bottleneck and feature selection are sized for bottleneck ResNets (256/512/1024
channels at layer1-3): resnet18 and resnet34 do not fit, resnet50 is the smallest that does.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from adrun.models import cfa, zoo

if TYPE_CHECKING:
    from collections.abc import Iterator

# Bottleneck ResNets whose torchvision net and anomalib decoder both exist (channels x4).
BACKBONES = Literal["resnet50", "resnet101", "resnet152", "wide_resnet50_2", "wide_resnet101_2"]


class UninetConfig(zoo.SizeFloor):
    name: Literal["uninet"]
    student_backbone: BACKBONES = "wide_resnet50_2"
    teacher_backbone: BACKBONES = "wide_resnet50_2"
    temperature: float = Field(0.1, gt=0)
    # The teachers' weights, as `pre_trained` / `weights` mean for every backbone model:
    # true: torchvision's DEFAULT file from the torch hub cache; false: untrained;
    # a local state dict of torchvision's teacher_backbone (.pth/.pt/.safetensors).
    pre_trained: bool = True
    weights: Path | None = None

    @field_validator("weights")
    @classmethod
    def _weights_file(cls, value):
        if value is not None and value.suffix not in (".pth", ".pt", ".safetensors"):
            raise ValueError("must be a .pth, .pt or .safetensors state dict file")
        return value

    @model_validator(mode="after")
    def _one_wish(self):
        if self.weights is not None and not self.pre_trained:
            raise ValueError("weights: contradicts pre_trained: false; drop one of the two")
        return self

    @property
    def backbone(self) -> str:
        """The torchvision net whose weights are read (CFA's checks, fetch and provenance use this name)."""
        return self.teacher_backbone


@contextlib.contextmanager
def torchvision_teachers(loaded: dict | None) -> Iterator[None]:
    """anomalib's ``Teachers._get_teacher`` with ``weights=None`` + ``loaded`` instead of torchvision's DEFAULT."""
    import torchvision
    from anomalib.models.image.uninet import torch_model
    from torchvision.models.feature_extraction import create_feature_extractor

    original = torch_model.Teachers.__dict__["_get_teacher"]

    def get_teacher(backbone: str) -> Any:
        net = getattr(torchvision.models, backbone)(weights=None)
        if loaded is not None:
            net.load_state_dict(loaded)
        return create_feature_extractor(net, return_nodes=["layer3", "layer2", "layer1"])

    torch_model.Teachers._get_teacher = staticmethod(get_teacher)  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch_model.Teachers._get_teacher = original  # type: ignore[method-assign]


class UninetSpec(cfa.CfaSpec):
    """CFA's torchvision checks, downloads and provenance, for UniNet's two teachers."""

    name = "uninet"
    anomalib_class = "anomalib.models.UniNet"
    config = UninetConfig  # type: ignore[assignment]  # CFA's methods read only backbone, pre_trained, weights
    summary = "contrastive student-teacher with a bottleneck (Wei et al. 2025); torchvision teachers"
    weights = cfa.CfaSpec.weights

    def building(self, cfg: Any) -> contextlib.AbstractContextManager:
        return torchvision_teachers(cfa.state(cfg))

    def for_checkpoint(self, cfg: Any) -> Any:
        return cfg.model_copy(update={"pre_trained": False, "weights": None})


SPEC = UninetSpec()
