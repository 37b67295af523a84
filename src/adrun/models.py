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

from adrun.errors import WeightsError

logger = logging.getLogger(__name__)

TEACHER_CHOICES = ("auto", "random")


class AdrunPatchcore(Patchcore):
    """Patchcore whose coreset step is chosen by ``coreset``.

    ``coreset="fast"`` uses adrun's exact k-center-greedy (same picks as anomalib's,
    fewer bytes touched per pick); ``coreset="anomalib"`` keeps the stock sampler.
    """

    def __init__(self, *args, coreset: str = "fast", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.coreset = coreset

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


class AdrunEfficientAd(EfficientAd):
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
            load_teacher(self.model.teacher, Path(self.teacher), device=self.device)


def load_teacher(teacher: torch.nn.Module, path: Path, device: torch.device | str = "cpu") -> None:
    """Load a teacher state dict from ``path``, turning every mismatch into a ``WeightsError``."""
    if not path.is_file():
        raise WeightsError(f"teacher file {path} does not exist: set models.N.teacher to a .pth file, or 'auto'")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # truncated or not a torch file
        raise WeightsError(f"teacher file {path} cannot be read ({type(exc).__name__}): re-download it") from exc
    try:
        teacher.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(
            f"teacher file {path} does not fit this model_size ({first}): use the matching "
            "pretrained_teacher_<size>.pth"
        ) from exc
