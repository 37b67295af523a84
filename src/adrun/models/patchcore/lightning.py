"""adrun's subclass of anomalib's Patchcore: the coreset sampler and the backbone's weights file.

The architecture, scoring and metrics are anomalib's own. ``SPEC.build`` is the one place
that constructs it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from anomalib.models import Patchcore

from adrun.models.base import MetricsFromConfig


class AdrunPatchcore(MetricsFromConfig, Patchcore):  # type: ignore[misc]  # anomalib's own to_onnx clash
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
        from adrun.models.patchcore.coreset import sample_coreset

        model = self.model
        if len(model.embedding_store) == 0:
            msg = "Embedding store is empty. Cannot perform coreset selection."
            raise ValueError(msg)
        model.memory_bank = torch.vstack(model.embedding_store)
        model.embedding_store.clear()
        model.memory_bank = sample_coreset(model.memory_bank, self.coreset_sampling_ratio, method=self.coreset)
