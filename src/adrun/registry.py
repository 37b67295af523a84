"""Datamodule, metric, logger and engine builders for a cell; its model from its spec.

Models are built by their spec in adrun's own registry (``adrun.models.SPECS``), never
from import paths written in a config.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from anomalib.callbacks.checkpoint import ModelCheckpoint
from anomalib.engine import Engine
from anomalib.metrics import AUPR, AUPRO, AUROC, Evaluator, F1Max, F1Score

from adrun.config import Cell, MetricConfig
from adrun.datasets import format_spec
from adrun.models import spec

# --------------------------------------------------------------------------- data


def build_datamodule(cell: Cell, root: Path) -> Any:
    """The format's anomalib datamodule (``adrun.datasets``): no download, ``--smoke`` trimming."""
    common: dict[str, Any] = {
        "train_batch_size": cell.train_batch_size,
        "eval_batch_size": cell.eval_batch_size,
        "num_workers": cell.data.num_workers,
        "seed": cell.seed,
    }
    datamodule = format_spec(cell.data.format).build(Path(root), cell.category, cell.data, common, cell.smoke)
    if cell.smoke:
        datamodule.smoke_n_train = cell.smoke_settings.n_train
        datamodule.smoke_n_test_per_label = cell.smoke_settings.n_test_per_label
    return datamodule


# --------------------------------------------------------------------------- metrics

_IMAGE = ("pred_score", "gt_label")
_PIXEL = ("anomaly_map", "gt_mask")
# config.METRIC_NAMES -> (anomalib class, the batch fields it reads). anomalib names each
# metric prefix + class name, which is how they come back from engine.test().
METRICS: dict[str, tuple[type, tuple[str, ...]]] = {
    "image_AUROC": (AUROC, _IMAGE),
    "pixel_AUROC": (AUROC, _PIXEL),
    "image_F1Max": (F1Max, _IMAGE),
    "pixel_F1Max": (F1Max, _PIXEL),
    "pixel_AUPRO": (AUPRO, _PIXEL),
    "image_AUPR": (AUPR, _IMAGE),
    "pixel_AUPR": (AUPR, _PIXEL),
    # F1Score scores the thresholded predictions (anomalib's adaptive F1 threshold).
    "image_F1Score": (F1Score, ("pred_label", "gt_label")),
    "pixel_F1Score": (F1Score, ("pred_mask", "gt_mask")),
}


def build_metric(spec: MetricConfig):
    cls, fields = METRICS[spec.name]
    prefix = spec.name.split("_", 1)[0] + "_"
    # Pixel metrics are not strict, as in anomalib's default evaluator: a dataset without
    # masks (format folder without ground_truth) skips them instead of failing the cell.
    return cls(fields=list(fields), prefix=prefix, strict=prefix == "image_", **spec.settings())


def metric_settings(spec: MetricConfig) -> dict[str, Any]:
    """What the record keeps beside each value: anomalib's class, the fields it read, its settings."""
    cls, fields = METRICS[spec.name]
    return {"class": f"anomalib.metrics.{cls.__name__}", "fields": list(fields), **spec.settings()}


def build_evaluator(cell: Cell) -> Evaluator:
    """anomalib's Evaluator computing the config's ``metrics:`` during test (none during validation)."""
    return Evaluator(test_metrics=[build_metric(spec) for spec in cell.metrics])


# --------------------------------------------------------------------------- models


def build_model(cell: Cell, exp_dir: Path):
    return spec(cell.model.name).build(cell.model, exp_dir, build_evaluator(cell))


def safe_globals(model_name: str):
    """The types ``torch.load(weights_only=True)`` may rebuild from this model's checkpoints.

    anomalib's own allow-list (its enums, numpy scalars) plus the model's extras, the
    same list Lightning's checkpoint IO uses in ``test`` and ``predict``.
    """
    from anomalib.utils.serialization import anomalib_safe_globals

    return anomalib_safe_globals(extra=spec(model_name).lightning_class().checkpoint_safe_globals())


# --------------------------------------------------------------------------- engine


def trainer_arguments(cell: Cell, devices: int | None = None) -> dict[str, Any]:
    args = cell.trainer.model_dump(exclude_none=True)
    if devices is not None:  # the backend pinned the process to this many (CUDA_VISIBLE_DEVICES)
        args["devices"] = devices
    if cell.smoke:
        args["max_epochs"] = 1
        args["max_steps"] = cell.smoke_settings.max_steps
    return args


def run_name(cell: Cell) -> str:
    return f"{cell.label}/{cell.category}/seed{cell.seed}"


def tracked_params(cell: Cell) -> dict[str, Any]:
    """The resolved cell config, flat enough for a tracker's parameter table."""
    params = cell.model_dump(mode="json", exclude={"logger", "metrics"})
    params["metrics"] = ", ".join(m.name + "".join(f" {k}={v}" for k, v in m.settings().items()) for m in cell.metrics)
    params["key"] = cell.key
    return params


def build_logger(cell: Cell, exp_dir: Path):
    """The Lightning logger ``logger:`` asks for, with the cell's config logged; False when none.

    Everything goes under the experiment folder: logs/tensorboard, logs/csv, or an MLflow
    file store in mlruns/ (unless the config names a tracking server).
    """
    spec = cell.logger
    if spec is None:
        return False
    version = f"{cell.category}-seed{cell.seed}"
    logger: Any
    if spec.name == "mlflow":
        from lightning.pytorch.loggers import MLFlowLogger

        uri = spec.tracking_uri
        if uri is None:
            # MLflow 3 keeps its file store only on request; it needs no database server.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = (Path(exp_dir) / "mlruns").resolve().as_uri()
        logger = MLFlowLogger(
            experiment_name=spec.experiment_name or cell.experiment,
            run_name=run_name(cell),
            tracking_uri=uri,
            tags=dict(spec.tags) or None,
        )
    elif spec.name == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        logger = TensorBoardLogger(
            Path(exp_dir) / "logs" / "tensorboard", name=cell.label, version=version, default_hp_metric=False
        )
    else:
        from lightning.pytorch.loggers import CSVLogger

        logger = CSVLogger(Path(exp_dir) / "logs" / "csv", name=cell.label, version=version)
    logger.log_hyperparams(tracked_params(cell))
    return logger


def build_engine(
    cell: Cell, work_dir: Path, logger=False, devices: int | None = None, callbacks: list | tuple = ()
) -> Engine:
    """The cell's Engine; ``logger`` from ``build_logger`` (only ``run_cell`` passes one)."""
    return Engine(
        default_root_dir=work_dir,
        logger=logger,
        enable_progress_bar=False,
        enable_model_summary=False,
        # adrun writes the checkpoint itself, atomically (run.py); save_top_k=0 keeps
        # anomalib from adding a second, non-atomic copy under weights/lightning.
        callbacks=[ModelCheckpoint(dirpath=work_dir, save_top_k=0, save_last=False), *callbacks],
        deterministic="warn",
        **trainer_arguments(cell, devices),
    )
