"""Where a cell's images are: dataset root, category discovery, and MVTec AD layout checks.

Checked before the first cell runs, so a missing folder is one clear line instead of
an anomalib traceback halfway through a sweep. No anomalib import here.
"""

from __future__ import annotations

from pathlib import Path

from adrun.config import DataConfig, Experiment
from adrun.errors import DataError

DEFAULT_ROOT = Path("./datasets/MVTecAD")
MVTEC_EXTENSIONS = (".png", ".PNG")  # anomalib's MVTecAD reads PNG only


def dataset_root(data: DataConfig, exp_dir: Path) -> Path:
    if data.root is not None:
        return Path(data.root)
    # Synthetic data is generated inside the experiment's own folder.
    return exp_dir / "data" if data.format == "synthetic" else DEFAULT_ROOT


def extensions(data: DataConfig) -> tuple[str, ...]:
    if data.format == "folder":
        return tuple({e.lower() for e in data.extensions} | {e.upper() for e in data.extensions})
    return MVTEC_EXTENSIONS


def prepare(experiment: Experiment, exp_dir: Path) -> tuple[Path, list[str]]:
    """Resolve the dataset root and category list; generate synthetic data when asked."""
    data = experiment.data
    root = dataset_root(data, exp_dir)
    if data.format == "synthetic":
        from adrun import synthetic

        categories = list(synthetic.CATEGORIES) if data.categories == "all" else list(data.categories)
        unknown = [c for c in categories if c not in synthetic.CATEGORIES]
        if unknown:
            raise DataError(
                f"data.categories: synthetic data has no category {unknown[0]!r}; "
                f"choose from {', '.join(synthetic.CATEGORIES)}"
            )
        s = data.synthetic
        synthetic.make_dataset(
            root, categories, seed=s.seed, image_size=s.image_size,
            n_train=s.n_train, n_test_good=s.n_test_good, n_test_defect=s.n_test_defect,
        )
    else:
        categories = discover(root, data) if data.categories == "all" else list(data.categories)
    problems = [p for c in categories for p in layout_problems(root, c, data)]
    if problems:
        raise DataError("\n".join(dict.fromkeys(problems)))
    return root, categories


def discover(root: Path, data: DataConfig) -> list[str]:
    """Every folder under ``root`` that holds ``train/good``: users' own products count too."""
    _check_root(root, data)
    found = sorted(p.name for p in root.iterdir() if (p / "train" / "good").is_dir())
    if not found:
        raise DataError(
            f"data.root {root}: no category folder with train/good inside; "
            "point data.root at a folder in MVTec AD layout (<root>/<category>/train/good/...)"
        )
    return found


def _check_root(root: Path, data: DataConfig) -> None:
    if not root.is_dir():
        raise DataError(
            f"data.root {root} does not exist; download MVTec AD there, "
            "set data.root (or --root, or ADRUN_DATA_ROOT), or use data.format: synthetic"
        )


def _images(folder: Path, exts: tuple[str, ...]) -> list[Path]:
    return [p for p in folder.iterdir() if p.suffix in exts] if folder.is_dir() else []


def layout_problems(root: Path, category: str, data: DataConfig) -> list[str]:
    """One line per missing piece of ``<root>/<category>`` in MVTec AD layout."""
    if not root.is_dir():
        return [
            f"data.root {root} does not exist; download MVTec AD there, "
            "set data.root (or --root, or ADRUN_DATA_ROOT), or use data.format: synthetic"
        ]
    base = root / category
    if not base.is_dir():
        have = sorted(p.name for p in root.iterdir() if p.is_dir())[:8]
        listed = ", ".join(have) or "none"
        return [f"category {category!r}: folder {base} is missing; categories under {root}: {listed}"]
    exts = extensions(data)
    problems = []
    if not _images(base / "train" / "good", exts):
        problems.append(
            f"category {category!r}: {base / 'train' / 'good'} has no {'/'.join(sorted(set(e.lower() for e in exts)))} "
            "images; MVTec AD layout needs <category>/train/good/*"
        )
    test = base / "test"
    defects = sorted(p.name for p in test.iterdir() if p.is_dir() and p.name != "good") if test.is_dir() else []
    if not test.is_dir() or not any(_images(test / d, exts) for d in [*defects, "good"]):
        problems.append(
            f"category {category!r}: {test} is missing or empty; MVTec AD layout needs <category>/test/<defect>/*"
        )
    for defect in defects:
        masks = base / "ground_truth" / defect
        if _images(test / defect, exts) and not _images(masks, exts):
            problems.append(
                f"category {category!r}: {masks} is missing; every test/<defect> needs ground_truth/<defect>/*_mask.png"
            )
    return problems


# Photos that ship inside scikit-image (no download): enough natural images for
# EfficientAd's ImageNet penalty term in offline smoke runs. Not a substitute for
# imagenette on real data.
BUILTIN_PHOTOS = (
    "astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "coins.png",
    "grass.png", "gravel.png", "horse.png", "hubble_deep_field.jpg", "ihc.png", "moon.png",
    "motorcycle_left.png", "page.png", "retina.jpg", "rocket.jpg", "text.png",
)


def builtin_imagenet(exp_dir: Path) -> Path:
    """Assemble ``<exp_dir>/imagenet-builtin/photos/*`` (one ImageFolder class) from skimage's photos."""
    import importlib.util
    import os
    import shutil
    import tempfile

    spec = importlib.util.find_spec("skimage")
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
