"""adrun's subclasses of anomalib's models.

They change only where weights come from and which coreset sampler runs; the
architectures, losses and metrics are anomalib's own. ``registry`` is the one
place that constructs them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from anomalib.models import EfficientAd, Patchcore

logger = logging.getLogger(__name__)


class MetricsFromConfig:
    """The Evaluator comes from the config (``metrics:``), never from a checkpoint.

    anomalib's AUPRO keeps ``fpr_limit`` as a buffer, so its checkpoints carry evaluator
    state (in the model's state dict and again as the Evaluator callback's state), and
    loading one into a model asked for other metrics fails on the keys. adrun saves none
    and, on load, keeps the evaluator it was built with, so checkpoints from before adrun
    asked for AUPRO load too.
    """

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)  # type: ignore[misc]
        _drop_evaluator(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        _drop_evaluator(checkpoint)
        evaluator = self.evaluator  # type: ignore[attr-defined]
        if evaluator is not None:
            checkpoint["state_dict"].update({f"evaluator.{k}": v for k, v in evaluator.state_dict().items()})
        super().on_load_checkpoint(checkpoint)  # type: ignore[misc]


def _drop_evaluator(checkpoint: dict) -> None:
    state = checkpoint.get("state_dict", {})
    checkpoint["state_dict"] = type(state)((k, v) for k, v in state.items() if not k.startswith("evaluator."))
    # The Evaluator is a callback too; Lightning keys callback state by class name.
    callbacks = checkpoint.get("callbacks") or {}
    for key in [k for k in callbacks if str(k).startswith("Evaluator")]:
        del callbacks[key]


class AdrunPatchcore(MetricsFromConfig, Patchcore):
    """Patchcore whose coreset step is chosen by ``coreset`` and whose backbone may come from a file.

    ``coreset="fast"`` uses adrun's exact k-center-greedy (same picks as anomalib's,
    fewer bytes touched per pick); ``coreset="anomalib"`` keeps the stock sampler.
    ``weights``: a local state dict for the timm backbone. The backbone is then built
    untrained (no hub access at all) and the file loaded into it.
    """

    def __init__(self, *args, coreset: str = "fast", weights: str | Path | None = None, **kwargs) -> None:
        if weights is not None:
            kwargs["pre_trained"] = False
        super().__init__(*args, **kwargs)
        self.coreset = coreset
        if weights is not None:
            from adrun.weights import load_backbone

            extractor = self.model.feature_extractor
            load_backbone(extractor, str(extractor.backbone), Path(weights))

    def fit(self) -> None:
        # Same steps as PatchcoreModel.subsample_embedding, with the sampler swapped.
        from adrun.coreset import sample_coreset

        model = self.model
        if len(model.embedding_store) == 0:
            msg = "Embedding store is empty. Cannot perform coreset selection."
            raise ValueError(msg)
        model.memory_bank = torch.vstack(model.embedding_store)
        model.embedding_store.clear()
        model.memory_bank = sample_coreset(model.memory_bank, self.coreset_sampling_ratio, method=self.coreset)


class AdrunEfficientAd(MetricsFromConfig, EfficientAd):
    """EfficientAd whose teacher comes from ``teacher``.

    - ``"auto"``: anomalib's cache, downloading into it when missing (stock behaviour).
    - ``"random"``: keep the teacher's seeded random initialisation. The anomaly maps
      are then meaningless beyond wiring: fit for smoke tests only.
    - a path: a state dict for ``model.teacher``, loaded with ``weights_only=True``.
    """

    def __init__(self, *args, teacher: str = "auto", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.teacher = str(teacher)

    def prepare_pretrained_model(self) -> None:
        if self.teacher == "auto":
            super().prepare_pretrained_model()
        elif self.teacher == "random":
            logger.warning("EfficientAd: random teacher (teacher: random) - results are fit for smoke tests only.")
        else:
            size = getattr(self.model_size, "value", self.model_size)
            load_teacher(self.model.teacher, Path(self.teacher), device=self.device, model_size=str(size))


def load_teacher(teacher: torch.nn.Module, path: Path, device: torch.device | str = "cpu",
                 model_size: str = "small") -> None:
    """Load a teacher state dict from ``path``, turning every mismatch into a ``WeightsError``."""
    from adrun.weights import teacher_state

    state = teacher_state(Path(path), model_size, _out_channels(teacher))
    teacher.load_state_dict(state)
    teacher.to(device)


def _out_channels(teacher: torch.nn.Module) -> int:
    # The last conv of either PDN size produces the teacher's output channels.
    convs = [m for m in teacher.modules() if isinstance(m, torch.nn.Conv2d)]
    return convs[-1].out_channels
