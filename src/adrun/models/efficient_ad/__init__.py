"""EfficientAd (anomalib's ``EfficientAd``): a student-teacher pair plus an autoencoder.

What it needs besides the dataset: a pretrained teacher (anomalib's cache, a file, or a
seeded random one for smoke runs) and ImageNet-like photos for its penalty term
(``imagenet_dir``: imagenette, or adrun's builtin photos for smoke runs). It trains with
batch size 1 and images of at least 256 px. Everything adrun knows about EfficientAd is
in this package.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from adrun import checks
from adrun.checks import Check, Download
from adrun.errors import AdrunError, DataError
from adrun.models.base import ModelSpec
from adrun.schema import ModelBase

if TYPE_CHECKING:
    from anomalib.metrics import Evaluator

# Where the downloads come from (anomalib 2.7's WEIGHTS_DOWNLOAD_INFO and
# IMAGENETTE_DOWNLOAD_INFO). Only the hosts matter here: they are probed.
TEACHER_URL = "https://github.com/open-edge-platform/anomalib/releases/download/efficientad_pretrained_weights/"
IMAGENETTE_URL = "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2.tgz"
# Smaller inputs crash inside its autoencoder, which decodes to a fixed 256 px.
MIN_IMAGE_SIZE = 256


class EfficientAdConfig(ModelBase):
    name: Literal["efficient_ad"]
    model_size: Literal["small", "medium"] = "small"
    # auto: anomalib's cache and download; random: a seeded random teacher (smoke
    # tests only); or a path to pretrained_teacher_<size>.pth.
    teacher: str = "auto"
    # A folder with at least one class subfolder of images (ImageFolder), or
    # "builtin": photos shipped with scikit-image, assembled under the output folder.
    imagenet_dir: str = "./datasets/imagenette"
    teacher_out_channels: int = 384
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    padding: bool = False
    pad_maps: bool = True

    @field_validator("image_size")
    @classmethod
    def _at_least_256(cls, value):
        if value is not None and value < MIN_IMAGE_SIZE:
            raise ValueError(
                f"must be at least {MIN_IMAGE_SIZE} for efficient_ad (its autoencoder decodes to {MIN_IMAGE_SIZE} px)"
            )
        return value


def teacher_dir() -> Path:
    """anomalib's folder for EfficientAd's teachers."""
    return checks.anomalib_weights_dir() / "efficientad_pretrained_weights"


class EfficientAdSpec(ModelSpec):
    name = "efficient_ad"
    rank = 1
    anomalib_class = "anomalib.models.EfficientAd"
    config = EfficientAdConfig
    summary = "student-teacher pair plus autoencoder (Batzner et al. 2024); batch size 1, >= 256 px"
    image_size = MIN_IMAGE_SIZE
    weights = "pretrained teacher (anomalib cache) and imagenette photos"
    offline = "with teacher: FILE (or random, smoke only) and imagenet_dir: FOLDER (or builtin)"
    standalone = {"train_batch_size": 1}

    def build(self, cfg: EfficientAdConfig, exp_dir: Path, evaluator: Evaluator):
        from adrun.models.efficient_ad.lightning import AdrunEfficientAd

        size = cfg.image_size or self.image_size
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

    def lightning_class(self) -> type[Any]:
        from adrun.models.efficient_ad.lightning import AdrunEfficientAd

        return AdrunEfficientAd

    def checks(self, cfg: EfficientAdConfig, label: str, source: str | None) -> dict[str, Check]:
        return {"teacher": _teacher(cfg, label, source), "imagenette": _imagenette(cfg, label, source)}

    def cell_problems(self, cell: Any) -> list[str]:
        if cell.train_batch_size != 1:
            return [
                f"{cell.label}: EfficientAd trains with batch size 1 (paper setting, enforced by anomalib); "
                "set train_batch_size: 1 on that model entry"
            ]
        return []

    def notes(self, cfg: EfficientAdConfig) -> list[str]:
        if cfg.teacher == "random":
            return [
                "uses a random teacher (teacher: random): fit for smoke tests only, not what EfficientAd does "
                "with its real one."
            ]
        return []

    def downloads(self, cfg: EfficientAdConfig) -> list[Download]:
        out = []
        if cfg.teacher == "auto":
            folder = teacher_dir()
            file = folder / f"pretrained_teacher_{cfg.model_size}.pth"
            out.append(Download("teacher", file.name, folder, file.is_file(), _download_teacher))
        if cfg.imagenet_dir != "builtin":
            folder = Path(cfg.imagenet_dir)
            out.append(
                Download("imagenette", str(folder), folder, folder.is_dir(), lambda: _download_imagenette(folder))
            )
        return out

    def environment(self) -> list[tuple[str, str]]:
        folder = teacher_dir()
        found = sorted(p.name for p in folder.glob("pretrained_teacher_*.pth")) if folder.is_dir() else []
        return [("anomalib cache (EfficientAd teachers)", f"{folder} ({', '.join(found) or 'none cached'})")]

    def probe_urls(self) -> tuple[str, ...]:
        return TEACHER_URL, IMAGENETTE_URL

    def sources(self, cfg: EfficientAdConfig) -> dict[str, Any]:
        teacher = {"auto": "anomalib pretrained (cache or download)", "random": "random (smoke only)"}
        imagenet = "builtin photos" if cfg.imagenet_dir == "builtin" else str(Path(cfg.imagenet_dir).resolve())
        return {"teacher": teacher.get(cfg.teacher, f"file {Path(cfg.teacher).resolve()}"), "imagenette": imagenet}


SPEC = EfficientAdSpec()


# --------------------------------------------------------------------------- checks


def _teacher(cfg: EfficientAdConfig, label: str, source: str | None) -> Check:
    if cfg.teacher == "random":
        return Check(True, "random (smoke only)")
    if cfg.teacher != "auto":
        from adrun.models.efficient_ad.teacher import teacher_state

        try:
            teacher_state(Path(cfg.teacher), cfg.model_size, cfg.teacher_out_channels)
        except AdrunError as exc:
            return Check(False, "bad file", (f"{label}: {exc}; set teacher: on that model entry",))
        return Check(True, f"file {Path(cfg.teacher).name}")
    folder = teacher_dir()
    name = f"pretrained_teacher_{cfg.model_size}.pth"
    if (folder / name).is_file():
        return Check(True, "cached")
    if folder.is_dir():
        # anomalib downloads only when the folder is missing, so a partial one never heals.
        return Check(
            False,
            "incomplete",
            (
                f"{label}: {folder} exists without {name}; delete that folder so "
                "anomalib downloads it again, or set teacher: FILE on that model entry",
            ),
        )
    if checks.reachable(TEACHER_URL)[TEACHER_URL]:
        return Check(True, "download (github.com)")
    return Check(
        False,
        "missing",
        (
            f"{label}: EfficientAd's pretrained teacher is not in anomalib's cache {folder} and github.com is "
            f"unreachable (no network?); set teacher: FILE ({name}) on that model entry, "
            f"or teacher: random for smoke runs only, {checks.fetch_hint(source)}",
        ),
    )


def _has_class_folder(folder: Path) -> bool:
    """ImageFolder's layout: a class subfolder with an image somewhere below it."""
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        for _, _, files in os.walk(sub):
            if any(Path(f).suffix.lower() in checks.IMAGE_SUFFIXES for f in files):
                return True
    return False


def _imagenette(cfg: EfficientAdConfig, label: str, source: str | None) -> Check:
    if cfg.imagenet_dir == "builtin":
        return Check(True, "builtin photos")
    folder = Path(cfg.imagenet_dir)
    if folder.is_dir():
        if _has_class_folder(folder):
            return Check(True, "found")
        return Check(
            False,
            "no classes",
            (
                f"{label}: imagenet_dir {folder} has no class subfolder with images (ImageFolder layout: "
                f"{folder}/<class>/*.jpg); point imagenet_dir: at the extracted imagenette2 folder, "
                "or delete the empty folder so anomalib downloads imagenette into it",
            ),
        )
    if folder.exists():
        return Check(False, "not a folder", (f"{label}: imagenet_dir {folder} is a file; point it at a folder",))
    if checks.reachable(IMAGENETTE_URL)[IMAGENETTE_URL]:
        return Check(True, "download (1.5 GB)")
    return Check(
        False,
        "missing",
        (
            f"{label}: imagenet_dir {folder} does not exist and s3.amazonaws.com (imagenette's host) is unreachable "
            "(no network?); set imagenet_dir: to an ImageFolder folder such as an extracted imagenette2, "
            f"or imagenet_dir: builtin for smoke runs only, {checks.fetch_hint(source)}",
        ),
    )


# --------------------------------------------------------------------------- downloads


def _download_teacher() -> None:
    from anomalib.data.utils import download_and_extract
    from anomalib.models.image.efficient_ad.lightning_model import WEIGHTS_DOWNLOAD_INFO

    download_and_extract(checks.anomalib_weights_dir(), WEIGHTS_DOWNLOAD_INFO)


def _download_imagenette(folder: Path) -> None:
    from anomalib.data.utils import download_and_extract
    from anomalib.models.image.efficient_ad.lightning_model import IMAGENETTE_DOWNLOAD_INFO

    download_and_extract(folder, IMAGENETTE_DOWNLOAD_INFO)


# --------------------------------------------------------------------------- builtin photos

# Photos that ship inside scikit-image (no download): enough natural images for
# EfficientAd's ImageNet penalty term in offline smoke runs. Not a substitute for
# imagenette on real data.
BUILTIN_PHOTOS = (
    "astronaut.png",
    "brick.png",
    "camera.png",
    "chelsea.png",
    "coffee.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "horse.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "moon.png",
    "motorcycle_left.png",
    "page.png",
    "retina.jpg",
    "rocket.jpg",
    "text.png",
)


def builtin_imagenet(exp_dir: Path) -> Path:
    """Assemble ``<exp_dir>/imagenet-builtin/photos/*`` (one ImageFolder class) from skimage's photos."""
    import importlib.util
    import shutil
    import tempfile

    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "scikit-image is not installed (anomalib brings it); set imagenet_dir to an ImageFolder "
            "directory, or pip install scikit-image"
        )
    source = Path(next(iter(spec.submodule_search_locations))) / "data"
    root = exp_dir / "imagenet-builtin"
    folder = root / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    for name in BUILTIN_PHOTOS:
        target = folder / name
        if not target.exists() and (source / name).exists():
            fd, tmp = tempfile.mkstemp(dir=folder, suffix=".part")
            os.close(fd)
            shutil.copyfile(source / name, tmp)
            os.replace(tmp, target)
    if not any(folder.iterdir()):
        raise DataError(f"no photos found in {source}; set imagenet_dir to an ImageFolder directory")
    return root
