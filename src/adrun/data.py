"""Where a cell's images are: dataset root, category discovery, and MVTec AD layout checks.

Checked before the first cell runs, so a missing folder is one clear line instead of
an anomalib traceback halfway through a sweep. No anomalib import here.
"""

from __future__ import annotations

import struct
from pathlib import Path

from adrun.config import DataConfig, Experiment
from adrun.errors import DataError

DEFAULT_ROOT = Path("./datasets/MVTecAD")
MVTEC_EXTENSIONS = (".png", ".PNG")  # anomalib's MVTecAD reads PNG only
JPEG_SUFFIXES = (".jpg", ".jpeg")
# PIL modes of 16- and 32-bit single-channel images. anomalib reads every image with
# convert("RGB") and every mask with convert("L"), which clip such values at 255: a
# 16-bit photo becomes all white, without a word.
WIDE_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def dataset_root(data: DataConfig, exp_dir: Path) -> Path:
    if data.root is not None:
        return Path(data.root)
    # Synthetic data is generated inside the experiment's own folder.
    return exp_dir / "data" if data.format == "synthetic" else DEFAULT_ROOT


def extensions(data: DataConfig) -> tuple[str, ...]:
    if data.format == "folder":
        return tuple({e.lower() for e in data.extensions} | {e.upper() for e in data.extensions})
    return MVTEC_EXTENSIONS


def prepare(experiment: Experiment, exp_dir: Path, verify_images: bool = False) -> tuple[Path, list[str]]:
    """Resolve the dataset root and category list; generate synthetic data when asked.

    Then check every category: layout, masks, and each image's header (all of each image
    with ``verify_images``). Any problem is one line of one ``DataError``.
    """
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
    problems = [p for c in categories for p in layout_problems(root, c, data, verify_images)]
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


def layout_problems(root: Path, category: str, data: DataConfig, verify_images: bool = False) -> list[str]:
    """One line per missing piece of ``<root>/<category>`` in MVTec AD layout, then ``image_problems``."""
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
    if any(_images(test / d, exts) for d in defects) and not _images(test / "good", exts) \
            and not data.test_good_from_train:
        problems.append(
            f"category {category!r}: {test / 'good'} has no images; anomalib would then quietly move 20% of "
            "train/good into the test set: add good test images there, or set data.test_good_from_train: true "
            "to accept that split (the record keeps the setting)"
        )
    return problems + image_problems(base, category, data, defects, verify_images)


def _png_ihdr(head: bytes) -> tuple[tuple[int, int], str] | None:
    """Size and PIL's mode from a PNG's first 33 bytes (signature, IHDR), or None if they are not that.

    Four times faster than ``Image.open``, which matters on 5,000 images. Only 16-bit grey
    (colour type 0) opens as a wide mode in PIL; 16-bit colour opens as 8-bit RGB(A).
    """
    if len(head) < 33 or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
    return (width, height), "I;16" if depth == 16 and colour == 0 else f"colour {colour}, {depth} bit"


def _header(path: Path, verify: bool) -> tuple[tuple[int, int] | None, str | None, str | None]:
    """(size, mode, problem) of an image: the header only, or a full decode with ``verify``."""
    from PIL import Image

    if not verify and path.suffix.lower() == ".png":
        try:
            with open(path, "rb") as handle:
                parsed = _png_ihdr(handle.read(33))
        except OSError as exc:
            return None, None, exc.strerror or str(exc)
        if parsed:
            return parsed[0], parsed[1], None
        # Not a PNG after all: PIL says what it is instead.
    try:
        with Image.open(path) as image:
            if verify:
                image.load()
            return image.size, image.mode, None
    except Exception as exc:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ValueError...
        text = str(exc).strip().splitlines()
        return None, None, text[0] if text else type(exc).__name__


def unreadable(path: Path) -> str | None:
    """Why ``path`` is not a readable image (empty, not an image, cut short), or None. Decodes it."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            return "an empty file"
    except OSError as exc:
        return exc.strerror or str(exc)
    return _header(path, verify=True)[2]


def _first(paths: list, what: str) -> str:
    """``first`` or ``first (and N more)``: one line however many files share a problem."""
    more = f" (and {len(paths) - 1} more {what})" if len(paths) > 1 else ""
    return f"{paths[0]}{more}"


def image_problems(base: Path, category: str, data: DataConfig, defects: list[str],
                   verify_images: bool = False) -> list[str]:
    """What would change results without an error: unreadable or 16-bit images, masks that are
    missing, misnamed or of another size, JPEGs that format mvtec skips. One line per kind.

    Reads each image's header only (a few hundred bytes), unless ``verify_images``.
    """
    exts = extensions(data)
    where = f"category {category!r}"
    problems = []
    if data.format != "folder":
        jpegs = [p for d in ("train/good", *(f"test/{x}" for x in ("good", *defects)))
                 for p in _images(base / d, tuple(e for s in JPEG_SUFFIXES for e in (s, s.upper())))]
        if jpegs:
            problems.append(f"{where}: {_first(jpegs, 'JPEGs')} is a JPEG, and format {data.format} reads .png "
                            "only (as anomalib's MVTecAD does), so it is left out; set data.format: folder to read it")
    folders = [base / "train" / "good", base / "test" / "good", *(base / "test" / d for d in defects),
               *(base / "ground_truth" / d for d in defects)]
    unreadable, wide, sizes = [], [], {}
    for folder in folders:
        for path in sorted(_images(folder, exts)):
            size, mode, problem = _header(path, verify_images)
            if problem:
                unreadable.append((path, problem))
            elif mode in WIDE_MODES:
                wide.append((path, mode))
            else:
                sizes[path] = size
    if unreadable:
        why = unreadable[0][1]
        problems.append(f"{where}: {_first([p for p, _ in unreadable], 'files')} is not a readable image ({why}); "
                        "replace or remove it")
    if wide:
        mode = wide[0][1]
        problems.append(f"{where}: {_first([p for p, _ in wide], 'files')} is a 16-bit image (PIL mode {mode}), "
                        "which anomalib reads as all white; convert the images to 8 bits per channel")
    unmatched, orphans, misordered, mismatched = [], [], [], []
    for defect in defects:
        images = sorted(_images(base / "test" / defect, exts))
        masks = sorted(_images(base / "ground_truth" / defect, exts))
        if not images or not masks:
            continue  # a missing mask folder is reported by layout_problems
        names = {m.name: m for m in masks}
        paired = {}
        for image in images:
            found = next((names[n] for n in (f"{image.stem}_mask{image.suffix}", image.name, f"{image.stem}_mask.png",
                                              f"{image.stem}.png") if n in names), None)
            if found is None:
                unmatched.append(image)
            else:
                paired[image] = found
        orphans += [m for m in masks if m not in paired.values()]
        if len(images) == len(masks) and not unmatched:
            # anomalib pairs images and masks by sorted path, then checks the names agree.
            misordered += [i for i, m in zip(images, masks, strict=True) if i.stem not in m.stem][:1]
        for image, mask in paired.items():
            if image in sizes and mask in sizes and sizes[image] != sizes[mask]:
                mismatched.append((image, mask))
    if unmatched:
        seen = f"; {_first(orphans, 'masks')} matches no image" if orphans else ""
        problems.append(f"{where}: {_first(unmatched, 'images')} has no mask (expected "
                        f"ground_truth/<defect>/{unmatched[0].stem}_mask{unmatched[0].suffix}){seen}; "
                        "name each mask <image>_mask.png, as MVTec AD does")
    elif orphans:
        problems.append(f"{where}: {_first(orphans, 'masks')} matches no image in test/; rename it to "
                        "<image>_mask.png or move it out of ground_truth")
    elif misordered:
        problems.append(f"{where}: the masks of {misordered[0].parent} do not sort like their images (anomalib "
                        f"pairs them by sorted name, and {misordered[0].name} would get another's mask); "
                        "name each mask <image>_mask.png")
    if mismatched:
        image, mask = mismatched[0]
        problems.append(f"{where}: mask {_first([m for _, m in mismatched], 'masks')} is {sizes[mask][0]}x"
                        f"{sizes[mask][1]} but its image {image.name} is {sizes[image][0]}x{sizes[image][1]}; "
                        "every mask must have its image's size")
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
