"""What most model specs share: anomalib's class run as it is, its arguments straight from the config.

A spec built on ``ZooSpec`` names its anomalib class, its config (whose keys are
anomalib's argument names and defaults) and a few facts: where its backbone lives, whether
anomalib hard-codes ``pretrained=True``, whether anomalib forces the epoch count. ``build``
passes every config key anomalib's constructor takes, sets the image size, builds the
backbone untrained when asked (without touching the network) and loads ``weights: FILE``.

Untrained backbones where anomalib gives no flag: ``untrained()`` makes every
``timm.create_model`` inside it build with ``pretrained=False`` (every anomalib call site
goes through the ``timm`` module attribute), and torchvision builders are replaced by the
spec (CFA). Weights are then loaded by adrun with ``weights_only=True``; torchvision's own
hub cache loader unpickles, so adrun never lets torchvision load a file.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import field_validator

from adrun.models import backbone
from adrun.models.base import MetricsFromConfig, ModelSpec
from adrun.schema import ModelBase

if TYPE_CHECKING:
    from anomalib.metrics import Evaluator

    from adrun.checks import Check, Download

# Arguments every anomalib model takes, which adrun sets itself.
COMMON = ("pre_processor", "post_processor", "evaluator", "visualizer")
# The floor most models were seen to run at (docs: zoo notes); smaller inputs vanish in layer3/4.
MIN_IMAGE_SIZE = 64


class SizeFloor(ModelBase):
    """``image_size`` at least the model's floor (``min_image_size``), refused in the config otherwise."""

    min_image_size: ClassVar[int] = MIN_IMAGE_SIZE

    @field_validator("image_size")
    @classmethod
    def _at_least_floor(cls, value):
        if value is not None and value < cls.min_image_size:
            raise ValueError(f"must be at least {cls.min_image_size} for this model (the smallest size it runs at)")
        return value


class ZooSpec(ModelSpec):
    """A spec that runs anomalib's own class, built from the config keys it shares with anomalib's constructor."""

    # Attribute path (below the LightningModule) of the backbone ``weights: FILE`` loads into.
    backbone_at: ClassVar[str | None] = None
    # anomalib builds the backbone with pretrained=True and no flag to turn it off.
    hard_coded_pretrained: ClassVar[bool] = False
    # The epoch count anomalib's trainer_arguments force (memory banks, fits: 1); None: the user's.
    forced_epochs: ClassVar[int | None] = None
    # Layers a weights file must provide (for the check), read from this config key.
    layers_key: ClassVar[str] = "layers"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A timm backbone's weights and offline use read the same in every such spec.
        if issubclass(cls.__dict__.get("config", ModelBase), backbone.BackboneKeys):
            cls.weights = cls.__dict__.get("weights", backbone.WEIGHTS)
            cls.offline = cls.__dict__.get("offline", backbone.OFFLINE)

    def anomalib(self) -> type[Any]:
        import importlib

        module, _, cls = self.anomalib_class.rpartition(".")
        return getattr(importlib.import_module(module), cls)

    def lightning_class(self) -> type[Any]:
        return _adrun_class(self.anomalib())

    # ------------------------------------------------------------------ building

    def kwargs(self, cfg: Any, exp_dir: Path) -> dict[str, Any]:
        """The constructor's arguments: every config key anomalib's ``__init__`` takes."""
        params = inspect.signature(self.anomalib().__init__).parameters
        out = {k: v for k, v in cfg.model_dump().items() if k in params and k not in COMMON}
        if self.untrained(cfg) and "pre_trained" in params:
            out["pre_trained"] = False
        return out

    def pre_processor(self, cls: type[Any], size: int) -> Any:
        return cls.configure_pre_processor(image_size=(size, size))

    def build(self, cfg: Any, exp_dir: Path, evaluator: Evaluator):
        cls = self.lightning_class()
        size = cfg.image_size or self.image_size
        with self.building(cfg):
            model = cls(
                **self.kwargs(cfg, exp_dir),
                pre_processor=self.pre_processor(cls, size),
                evaluator=evaluator,
                visualizer=False,
            )
        weights = getattr(cfg, "weights", None)
        if weights is not None and self.backbone_at is not None:
            load_timm(model, self.backbone_at, cfg.backbone, Path(weights))
        return model

    def untrained(self, cfg: Any) -> bool:
        """Whether the backbone is built without pretrained weights (asked for, or a file replaces them)."""
        return isinstance(cfg, backbone.BackboneKeys) and (not cfg.pre_trained or cfg.weights is not None)

    def building(self, cfg: Any) -> contextlib.AbstractContextManager:
        """The context the model is constructed in: untrained timm where anomalib gives no flag."""
        if self.hard_coded_pretrained and self.untrained(cfg):
            return untrained()
        return contextlib.nullcontext()

    def for_checkpoint(self, cfg: Any) -> Any:
        # The checkpoint holds the backbone's weights: build it untrained, no hub, no file.
        if isinstance(cfg, backbone.BackboneKeys):
            return cfg.model_copy(update={"pre_trained": False, "weights": None})
        return cfg

    # ------------------------------------------------------------------ before a run

    def checks(self, cfg: Any, label: str, source: str | None) -> dict[str, Check]:
        if isinstance(cfg, backbone.BackboneKeys):
            layers = getattr(cfg, self.layers_key, [])
            layers = [layers] if isinstance(layers, str) else list(layers)
            return {"weights": backbone.check(cfg, layers, label, source)}
        return {}

    def cell_problems(self, cell: Any) -> list[str]:
        return training_length(cell, self.forced_epochs)

    def downloads(self, cfg: Any) -> list[Download]:
        return backbone.downloads(cfg) if isinstance(cfg, backbone.BackboneKeys) else []

    def sources(self, cfg: Any) -> dict[str, Any]:
        return {"backbone": backbone.source(cfg)} if isinstance(cfg, backbone.BackboneKeys) else {}


def training_length(cell: Any, forced_epochs: int | None) -> list[str]:
    """The schedule's keys: a forced epoch count cannot be changed; a trained model needs a finite one."""
    trainer = cell.trainer
    name = cell.model.name
    epochs = trainer.max_epochs if trainer.max_epochs != -1 else None  # -1: Lightning's "no epoch limit"
    steps = trainer.max_steps if trainer.max_steps != -1 else None
    for key, value in (("max_epochs", epochs), ("max_steps", steps)):
        if value is not None and value < 1:
            return [
                f"{cell.label}: trainer.{key} is {value}; give {key} >= 1 (or -1 for no limit) on that model "
                "entry or in trainer:"
            ]
    if forced_epochs is not None:
        if epochs is not None and epochs != forced_epochs:
            return [
                f"{cell.label}: {name} trains {forced_epochs} epoch(s) (anomalib forces max_epochs: "
                f"{forced_epochs}); drop trainer.max_epochs from that model entry"
            ]
        return []
    if epochs is None and steps is None:
        return [
            f"{cell.label}: {name} trains until a schedule ends and none is set (Lightning would run 1000 "
            "epochs, or forever with -1); set trainer.max_epochs or trainer.max_steps on that model entry"
        ]
    return []


_CLASSES: dict[type[Any], type[Any]] = {}


def _adrun_class(cls: type[Any]) -> type[Any]:
    """anomalib's class with adrun's one change: the evaluator comes from the config, never a checkpoint."""
    if cls not in _CLASSES:  # one class per model, so checkpoints and isinstance checks agree
        _CLASSES[cls] = type(
            f"Adrun{cls.__name__}", (MetricsFromConfig, cls), {"__module__": __name__, "__doc__": cls.__doc__}
        )
    return _CLASSES[cls]


@contextlib.contextmanager
def untrained() -> Iterator[None]:
    """Every ``timm.create_model`` inside builds with ``pretrained=False``: no hub, no download."""
    import timm

    create = timm.create_model

    def create_untrained(*args, **kwargs):
        kwargs["pretrained"] = False
        return create(*args, **kwargs)

    timm.create_model = create_untrained
    try:
        yield
    finally:
        timm.create_model = create


def load_timm(model: Any, at: str, name: str, path: Path) -> None:
    """Load a timm state dict file into the backbone at ``model.<at>`` (weights_only, shapes checked first)."""
    from adrun.weights import load_backbone

    parent_path, _, attr = f"model.{at}".rpartition(".")
    parent = functools.reduce(getattr, parent_path.split("."), model)
    target = getattr(parent, attr)
    if hasattr(target, "idx") and hasattr(target, "feature_extractor"):  # anomalib's TimmFeatureExtractor
        load_backbone(target, name, path)
        return
    # A bare timm features_only net (Fastflow): rebuild it through the same loader.
    from types import SimpleNamespace

    holder = SimpleNamespace(idx=list(target.feature_info.out_indices), feature_extractor=target)
    load_backbone(holder, name, path)
    setattr(parent, attr, holder.feature_extractor)
