"""adrun's subclass of anomalib's Patchcore: the coreset sampler, the backbone's weights file, the fast CPU path.

The architecture, scoring and metrics are anomalib's own. ``SPEC.build`` is the one place
that constructs it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from anomalib.models import Patchcore

from adrun.models.base import MetricsFromConfig
from adrun.models.patchcore.search import Bank, nearest, nearest_bf16

logger = logging.getLogger(__name__)


class AdrunPatchcore(MetricsFromConfig, Patchcore):  # type: ignore[misc]  # anomalib's own to_onnx clash
    """anomalib's Patchcore with adrun's faster CPU path; the same results on the exact path.

    - ``coreset="fast"``: adrun's exact k-center-greedy (the same picks as anomalib's,
      far fewer bytes touched per pick); ``coreset="anomalib"`` keeps the stock sampler.
    - ``weights``: a local state dict for the timm backbone. The backbone is then built
      untrained (no hub access at all) and the file loaded into it.
    - The backbone runs in ``channels_last`` under ``inference_mode`` (about 1.5x faster
      on CPU; the convolutions round differently from NCHW, within float32 noise).
    - Nearest neighbours (``search.py``): the bank's squared norms folded into the GEMM and
      the row minimum taken before the square root, one pass instead of six over the
      distance matrix; the same minimum, floats equal to stock's within rounding. The GEMM
      runs on oneDNN or on torch's BLAS, whichever this CPU runs faster (timed once).
    - The test set is scored once: Patchcore validates on the test set (``same_as_test``)
      and then tests on it, so the test step reuses the validation step's raw
      predictions for byte-identical images.
      Thresholds and normalisation still come from anomalib's own validation hooks, so
      every metric is unchanged.
    - ``precision="bf16"`` (opt-in): the backbone under bf16 autocast, and the
      neighbour search as a bf16 candidate filter with an fp32 re-check of the best
      ``search.K`` rows; pooling and the memory bank stay fp32. Only where the CPU has
      native bf16 (``adrun.precision``); elsewhere fp32, noted in ``run_notes()``.
    - ``phase_seconds``: where the time went (backbone, projection, coreset, scoring,
      metrics), for the record.
    """

    # oneDNN's convolutions are ~1.6x faster in NHWC on CPU; they round differently from
    # NCHW (~1e-7 relative). scripts/bench_category.py sets contiguous_format to show that
    # everything else on the exact path is bit for bit anomalib's.
    memory_format = torch.channels_last

    def __init__(
        self, *args, coreset: str = "fast", weights: str | Path | None = None, precision: str = "fp32", **kwargs
    ) -> None:
        from adrun.precision import resolve

        if weights is not None:
            kwargs["pre_trained"] = False
        super().__init__(*args, **kwargs)
        self.coreset = coreset
        if weights is not None:
            from adrun.weights import load_backbone

            extractor = self.model.feature_extractor
            load_backbone(extractor, str(extractor.backbone), Path(weights))
        self.precision_info = resolve(precision)
        if self.precision_info["asked"] != self.precision_info["used"]:
            logger.warning("Patchcore: %s", self.precision_info["note"])
        self.model.feature_extractor.to(memory_format=self.memory_format)
        self.phase_seconds: dict[str, float] = {}
        self._scored: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._reused = 0
        self._bank: Bank | None = None
        self.search_stats: dict[str, int] = {}

    # ====== adrun's fast CPU path (issue 15): every method below overrides a Patchcore step;
    # ====== the algorithms themselves live in models/patchcore/coreset.py and adrun.precision.

    # ------------------------------------------------------------------ timing

    def _add_seconds(self, name: str, seconds: float) -> None:
        self.phase_seconds[name] = self.phase_seconds.get(name, 0.0) + seconds

    @contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self._add_seconds(name, time.perf_counter() - began)

    def configure_callbacks(self):
        # Thresholds, normalisation and metrics are computed in the post-processor's and
        # the evaluator's hooks; time them as "metrics".
        callbacks = super().configure_callbacks()
        for callback in (self.post_processor, self.evaluator):
            if callback is not None and not getattr(callback, "_adrun_timed", False):
                for hook in (
                    "on_validation_batch_end",
                    "on_validation_epoch_end",
                    "on_test_batch_end",
                    "on_test_epoch_end",
                ):
                    if hasattr(callback, hook):
                        setattr(callback, hook, self._timed(getattr(callback, hook)))
                callback._adrun_timed = True  # type: ignore[assignment]  # a marker on anomalib's callback
        return callbacks

    def _timed(self, hook):
        def timed(*args, **kwargs):
            with self._phase("metrics"):
                return hook(*args, **kwargs)

        return timed

    def run_notes(self) -> dict:
        """What the record keeps about this model's run: precision, phases, reuse."""
        return {
            "precision": dict(self.precision_info),
            "phases": {name: round(seconds, 3) for name, seconds in self.phase_seconds.items()},
            "test_batches_reused": self._reused,
            **({"search": dict(self.search_stats)} if self.search_stats else {}),
            **({"gemm": dict(self._bank.kernels)} if self._bank is not None and self._bank.kernels else {}),
        }

    # ------------------------------------------------------------------ features

    def _autocast(self):
        if self.precision_info["used"] == "bf16" and self.device.type == "cpu":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return nullcontext()

    def _embedding(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """PatchcoreModel.forward up to the embedding, with the fast backbone: (rows, grid)."""
        model = self.model
        images = images.type(model.memory_bank.dtype)
        with self._phase("backbone"), torch.inference_mode():
            with self._autocast():
                features = model.feature_extractor(images.contiguous(memory_format=self.memory_format))
            features = {layer: model.feature_pooler(f.float()) for layer, f in features.items()}
            embedding = model.generate_embedding(features)
            grid = (int(embedding.shape[-2]), int(embedding.shape[-1]))
            return model.reshape_embedding(embedding), grid

    def training_step(self, batch, *args, **kwargs):
        del args, kwargs
        if self.model.tiler or self.model.feature_extractor.requires_grad:
            return super().training_step(batch)
        self.model.embedding_store.append(self._embedding(batch.image)[0])
        return torch.tensor(0.0, requires_grad=True, device=self.device)

    # ------------------------------------------------------------------ coreset

    def fit(self) -> None:
        # Same steps as PatchcoreModel.subsample_embedding, with the sampler swapped.
        from adrun.models.patchcore.coreset import sample_coreset

        model = self.model
        if len(model.embedding_store) == 0:
            msg = "Embedding store is empty. Cannot perform coreset selection."
            raise ValueError(msg)
        model.memory_bank = torch.vstack(model.embedding_store)
        model.embedding_store.clear()
        model.memory_bank = sample_coreset(
            model.memory_bank, self.coreset_sampling_ratio, method=self.coreset, timer=self._add_seconds
        )
        self._scored.clear()
        self._bank = None

    # ------------------------------------------------------------------ scoring

    def _bank_search(self) -> Bank:
        bank = self.model.memory_bank
        if self._bank is None or self._bank.bank is not bank:
            self._bank = Bank(bank)
        return self._bank

    def _nearest(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if embedding.device.type != "cpu":
            return self.model.nearest_neighbors(embedding, n_neighbors=1)
        if self.precision_info["used"] == "bf16":
            return nearest_bf16(embedding, self._bank_search(), self.search_stats)
        return nearest(embedding, self._bank_search())

    def _predict(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """PatchcoreModel.forward in eval mode (the fast backbone, then the search): pred_score and anomaly_map."""
        model = self.model
        if model.tiler or model.memory_bank.size(0) == 0:
            return model(images)._asdict()
        embedding, (width, height) = self._embedding(images)
        with self._phase("scoring"), torch.inference_mode():
            batch_size = images.shape[0]
            patch_scores, locations = self._nearest(embedding)
            patch_scores = patch_scores.reshape((batch_size, -1))
            locations = locations.reshape((batch_size, -1))
            pred_score = model.compute_anomaly_score(patch_scores, locations, embedding)
            patch_scores = patch_scores.reshape((batch_size, 1, width, height))
            anomaly_map = model.anomaly_map_generator(patch_scores, images.shape[-2:])
        return {"pred_score": pred_score, "anomaly_map": anomaly_map}

    @staticmethod
    def _key(images: torch.Tensor) -> tuple:
        """One image's identity: its shape, dtype and a digest of its bytes."""
        data = images.detach().cpu().contiguous()
        digest = hashlib.blake2b(data.numpy().tobytes(), digest_size=16).hexdigest()
        return (tuple(data.shape), str(data.dtype), digest)

    def _scored_batch(self, images: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """The raw predictions kept for every image of this batch, or None if one is missing."""
        found = [self._scored.get(self._key(image)) for image in images]
        if not found or any(item is None for item in found):
            return None
        return {
            "pred_score": torch.stack([item[0] for item in found if item is not None]),
            "anomaly_map": torch.stack([item[1] for item in found if item is not None]),
        }

    def validation_step(self, batch, *args, **kwargs):
        del args, kwargs
        predictions = self._predict(batch.image)
        # Validation runs on the test set (same_as_test): keep the raw predictions per
        # image, so test does not compute them again.
        for image, score, amap in zip(batch.image, predictions["pred_score"], predictions["anomaly_map"], strict=True):
            self._scored[self._key(image)] = (score.clone(), amap.clone())
        return batch.update(**predictions)

    def test_step(self, batch, *args, **kwargs):
        del args, kwargs
        predictions = self._scored_batch(batch.image)
        if predictions is None:
            predictions = self._predict(batch.image)
        else:
            self._reused += 1
        return batch.update(**predictions)

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0):
        del batch_idx, dataloader_idx
        return batch.update(**self._predict(batch.image))

    def on_load_checkpoint(self, checkpoint) -> None:
        super().on_load_checkpoint(checkpoint)
        self._scored.clear()
        self._bank = None
