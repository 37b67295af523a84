"""Model, datamodule and engine builders by registry name.

The only module that knows anomalib's constructors. Models are built from adrun's
own registry (``BUILDERS``), never from import paths written in a config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anomalib.callbacks.checkpoint import ModelCheckpoint
from anomalib.data import Folder, MVTecAD
from anomalib.engine import Engine

from adrun.config import Cell, EfficientAdConfig, PatchcoreConfig
from adrun.data import extensions
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


class SmokeMVTecAD(_SmokeSubset, MVTecAD):
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
        cls = SmokeMVTecAD if cell.smoke else MVTecAD
        datamodule = cls(root=root, category=cell.category, **common)
    if cell.smoke:
        datamodule.smoke_n_train = cell.smoke_settings.n_train
        datamodule.smoke_n_test_per_label = cell.smoke_settings.n_test_per_label
    return datamodule


# --------------------------------------------------------------------------- models


def _patchcore(cfg: PatchcoreConfig, exp_dir: Path) -> AdrunPatchcore:
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
        pre_processor=AdrunPatchcore.configure_pre_processor(image_size=(size, size), center_crop_size=crop),
        visualizer=False,
    )


def _efficient_ad(cfg: EfficientAdConfig, exp_dir: Path) -> AdrunEfficientAd:
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
        visualizer=False,
    )


BUILDERS = {"patchcore": _patchcore, "efficient_ad": _efficient_ad}


def build_model(cell: Cell, exp_dir: Path):
    return BUILDERS[cell.model.name](cell.model, exp_dir)


# --------------------------------------------------------------------------- engine


def trainer_arguments(cell: Cell) -> dict[str, Any]:
    args = cell.trainer.model_dump(exclude_none=True)
    if cell.smoke:
        args["max_epochs"] = 1
        args["max_steps"] = cell.smoke_settings.max_steps
    return args


def build_engine(cell: Cell, work_dir: Path, callbacks: list | tuple = ()) -> Engine:
    return Engine(
        default_root_dir=work_dir,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        # adrun writes the checkpoint itself, atomically (run.py); save_top_k=0 keeps
        # anomalib from adding a second, non-atomic copy under weights/lightning.
        callbacks=[ModelCheckpoint(dirpath=work_dir, save_top_k=0, save_last=False), *callbacks],
        deterministic="warn",
        **trainer_arguments(cell),
    )
