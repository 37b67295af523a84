"""Model, datamodule and engine builders by registry name.

The only module that knows anomalib's constructors. Models are built from adrun's
own registry (``BUILDERS``), never from import paths written in a config.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from anomalib.callbacks.checkpoint import ModelCheckpoint
from anomalib.data import Folder, MVTecAD
from anomalib.engine import Engine
from anomalib.metrics import AUPR, AUPRO, AUROC, Evaluator, F1Max, F1Score

from adrun.config import Cell, EfficientAdConfig, MetricConfig, PatchcoreConfig
from adrun.data import extensions
from adrun.errors import DatasetMissing
from adrun.models import AdrunEfficientAd, AdrunPatchcore

# --------------------------------------------------------------------------- data


class _SmokeSubset:
    """Trims the datasets after anomalib's own setup: the ``--smoke`` tiny subset."""

    smoke_n_train: int = 4
    smoke_n_test_per_label: int = 1

    def _setup(self, _stage: str | None = None) -> None:
        super()._setup(_stage)  # type: ignore[misc]
        train = self.train_data.samples
        self.train_data.samples = train.head(self.smoke_n_train).reset_index(drop=True)
        test = self.test_data.samples
        # A few images of every label folder (good and each defect) keep AUROC defined.
        folder = test.image_path.map(lambda p: Path(p).parent.name)
        picked = test.groupby(folder, sort=True, group_keys=False).head(self.smoke_n_test_per_label)
        self.test_data.samples = picked.reset_index(drop=True)


class _NoDownload:
    """MVTecAD downloads the whole dataset when the category folder is missing: never here.

    ``adrun fetch`` is the one command that downloads. A dataset that vanished after the
    preflight (moved, deleted, unmounted) fails its cell with one line instead.
    """

    def prepare_data(self) -> None:
        folder = Path(self.root) / self.category  # type: ignore[attr-defined]
        if not folder.is_dir():
            raise DatasetMissing(
                f"{folder} is gone (moved, deleted or unmounted since the sweep began); restore it and run the "
                "same command again to resume (adrun downloads MVTec AD only through `adrun fetch`)"
            )


class AdrunMVTecAD(_NoDownload, MVTecAD):
    pass


class SmokeMVTecAD(_SmokeSubset, AdrunMVTecAD):
    pass


class SmokeFolder(_SmokeSubset, Folder):
    pass


def build_datamodule(cell: Cell, root: Path):
    common: dict[str, Any] = {
        "train_batch_size": cell.train_batch_size,
        "eval_batch_size": cell.eval_batch_size,
        "num_workers": cell.data.num_workers,
        "seed": cell.seed,
    }
    if cell.data.format == "folder":
        base = Path(root) / cell.category
        defects = sorted(p.name for p in (base / "test").iterdir() if p.is_dir() and p.name != "good")
        cls = SmokeFolder if cell.smoke else Folder
        datamodule = cls(
            name=cell.category,
            root=base,
            normal_dir="train/good",
            normal_test_dir="test/good",
            abnormal_dir=[f"test/{d}" for d in defects],
            mask_dir=[f"ground_truth/{d}" for d in defects] if (base / "ground_truth").is_dir() else None,
            extensions=extensions(cell.data),
            # Validate on the test set, as MVTecAD does; Folder's default would halve it.
            val_split_mode="same_as_test",
            **common,
        )
    else:  # mvtec and synthetic share the MVTec AD layout
        cls = SmokeMVTecAD if cell.smoke else AdrunMVTecAD
        datamodule = cls(root=root, category=cell.category, **common)
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


def _patchcore(cfg: PatchcoreConfig, exp_dir: Path, evaluator: Evaluator) -> AdrunPatchcore:
    size = cfg.image_size or 256
    crop = (cfg.center_crop, cfg.center_crop) if cfg.center_crop else None
    return AdrunPatchcore(
        backbone=cfg.backbone,
        layers=list(cfg.layers),
        pre_trained=cfg.pre_trained,
        weights=cfg.weights,
        coreset_sampling_ratio=cfg.coreset_sampling_ratio,
        num_neighbors=cfg.num_neighbors,
        coreset=cfg.coreset,
        precision=cfg.precision,
        pre_processor=AdrunPatchcore.configure_pre_processor(image_size=(size, size), center_crop_size=crop),
        evaluator=evaluator,
        visualizer=False,
    )


def _efficient_ad(cfg: EfficientAdConfig, exp_dir: Path, evaluator: Evaluator) -> AdrunEfficientAd:
    from adrun.data import builtin_imagenet

    size = cfg.image_size or 256
    imagenet = builtin_imagenet(exp_dir) if cfg.imagenet_dir == "builtin" else Path(cfg.imagenet_dir)
    return AdrunEfficientAd(
        imagenet_dir=imagenet,
        teacher=cfg.teacher,
        teacher_out_channels=cfg.teacher_out_channels,
        model_size=cfg.model_size,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        padding=cfg.padding,
        pad_maps=cfg.pad_maps,
        pre_processor=AdrunEfficientAd.configure_pre_processor(image_size=(size, size)),
        evaluator=evaluator,
        visualizer=False,
    )


BUILDERS = {"patchcore": _patchcore, "efficient_ad": _efficient_ad}
CLASSES = {"patchcore": AdrunPatchcore, "efficient_ad": AdrunEfficientAd}


def build_model(cell: Cell, exp_dir: Path):
    return BUILDERS[cell.model.name](cell.model, exp_dir, build_evaluator(cell))


def safe_globals(model_name: str):
    """The types ``torch.load(weights_only=True)`` may rebuild from this model's checkpoints.

    anomalib's own allow-list (its enums, numpy scalars) plus the model's extras, the
    same list Lightning's checkpoint IO uses in ``test`` and ``predict``.
    """
    from anomalib.utils.serialization import anomalib_safe_globals

    return anomalib_safe_globals(extra=CLASSES[model_name].checkpoint_safe_globals())


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
    params["metrics"] = ", ".join(
        m.name + "".join(f" {k}={v}" for k, v in m.settings().items()) for m in cell.metrics
    )
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
    if spec.name == "mlflow":
        from lightning.pytorch.loggers import MLFlowLogger

        uri = spec.tracking_uri
        if uri is None:
            # MLflow 3 keeps its file store only on request; it needs no database server.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = (Path(exp_dir) / "mlruns").resolve().as_uri()
        logger = MLFlowLogger(
            experiment_name=spec.experiment_name or cell.experiment, run_name=run_name(cell),
            tracking_uri=uri, tags=dict(spec.tags) or None,
        )
    elif spec.name == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        logger = TensorBoardLogger(Path(exp_dir) / "logs" / "tensorboard", name=cell.label, version=version,
                                   default_hp_metric=False)
    else:
        from lightning.pytorch.loggers import CSVLogger

        logger = CSVLogger(Path(exp_dir) / "logs" / "csv", name=cell.label, version=version)
    logger.log_hyperparams(tracked_params(cell))
    return logger


def build_engine(cell: Cell, work_dir: Path, logger=False, devices: int | None = None,
                 callbacks: list | tuple = ()) -> Engine:
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
