"""Per-image test results of a cell: ``test_scores.csv`` (image, label, score, predicted label).

Written at test time beside the record, from the very batches anomalib's evaluator
scores, after its post-processing (normalised scores, thresholded labels). So the image
metrics recomputed from this file with anomalib's own metric classes equal the
recorded ones, and ``adrun table A --against B`` can resample test images.
Anomaly maps are not kept: a pixel metric's interval comes from the seeds alone.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from lightning.pytorch import Callback

from adrun.records import atomic_write_text

TEST_SCORES = "test_scores.csv"
COLUMNS = ["image", "label", "score", "pred_label"]


class AfterPostProcessing(Callback):
    """Hands each test batch to ``read`` once every callback has seen it.

    anomalib's post-processor and evaluator are the model's callbacks, which Lightning runs
    after the trainer's; the batch is read at the next batch's start (and at epoch end),
    when they are done with it. Subclasses implement ``start`` (a new test epoch) and ``read``.
    """

    _pending = None

    def start(self, trainer) -> None:
        raise NotImplementedError

    def read(self, batch) -> None:
        raise NotImplementedError

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._pending = None
        self.start(trainer)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._flush()

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._pending = batch

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._flush()

    def _flush(self) -> None:
        batch, self._pending = self._pending, None
        if batch is not None:
            self.read(batch)


class TestScores(AfterPostProcessing):
    """Collects each test image's score and label, once every callback has seen the batch.

    anomalib's post-processor and evaluator are the model's callbacks, which Lightning runs
    after the trainer's; the batch is read at the next batch's start (and at epoch end),
    when they are done with it. Only the few numbers are kept, never the images.
    """

    def __init__(self, root: Path | None = None):
        self.root = Path(root).resolve() if root is not None else None
        self.rows: list[dict] = []

    def start(self, trainer) -> None:
        self.rows = []

    def read(self, batch) -> None:
        if batch.pred_score is None or batch.gt_label is None:
            return
        scores = batch.pred_score.detach().float().cpu().flatten().tolist()
        labels = batch.gt_label.detach().int().cpu().flatten().tolist()
        predicted = (
            batch.pred_label.detach().int().cpu().flatten().tolist()
            if batch.pred_label is not None
            else [None] * len(scores)
        )
        paths = list(batch.image_path) if batch.image_path is not None else [""] * len(scores)
        for path, label, score, pred in zip(paths, labels, scores, predicted, strict=True):
            self.rows.append({"image": self._name(path), "label": label, "score": score, "pred_label": pred})

    def _name(self, path) -> str:
        """The image relative to the dataset root, so two experiments on one dataset pair up."""
        path = Path(str(path))
        if self.root is not None:
            try:
                return path.resolve().relative_to(self.root).as_posix()
            except ValueError:
                pass
        return path.as_posix()

    def write(self, folder: Path) -> str | None:
        """Write ``test_scores.csv`` into ``folder``; returns its name for the record (None: nothing seen)."""
        if not self.rows:
            return None
        frame = pd.DataFrame(self.rows, columns=COLUMNS)
        # %.9g round-trips float32 exactly: recomputed metrics equal the recorded ones.
        atomic_write_text(Path(folder) / TEST_SCORES, frame.to_csv(index=False, float_format="%.9g"))
        return TEST_SCORES


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"image": str})
