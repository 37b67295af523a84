"""STFPM (anomalib's ``Stfpm``): a student trained to match a frozen teacher's feature pyramid.

anomalib hard-codes the teacher's ``pretrained=True``; adrun's ``pre_trained: false``
builds it untrained without touching the network, and ``weights: FILE`` loads the teacher.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from adrun.models import backbone, zoo


class StfpmConfig(backbone.BackboneKeys, zoo.SizeFloor):
    name: Literal["stfpm"]
    backbone: str = "resnet18"
    layers: list[str] = Field(default_factory=lambda: ["layer1", "layer2", "layer3"])


class StfpmSpec(zoo.ZooSpec):
    name = "stfpm"
    anomalib_class = "anomalib.models.Stfpm"
    config = StfpmConfig
    summary = "student-teacher feature pyramid matching (Wang et al. 2021)"
    weights = "teacher: " + backbone.WEIGHTS
    backbone_at = "teacher_model"
    hard_coded_pretrained = True


SPEC = StfpmSpec()
