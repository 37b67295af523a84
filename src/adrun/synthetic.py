"""The synthetic MVTec-layout dataset: procedural textures with exactly masked defects.

``make_dataset`` writes, for each category::

    <out_dir>/<category>/train/good/000.png ...
    <out_dir>/<category>/test/good/000.png ...
    <out_dir>/<category>/test/<defect>/000.png ...
    <out_dir>/<category>/ground_truth/<defect>/000_mask.png ...

which is the layout ``anomalib.data.MVTecAD`` reads (PNG only). It lets the whole
pipeline run offline on a laptop, and the data is meant to be *learnable*: a memory-bank
model with an untrained backbone separates the defects from the texture well above chance.

Every image comes from its own generator, seeded by ``(seed, category, split, index)``,
so the bytes of one file never depend on which other files or categories were asked
for. A defect is painted onto a clean texture; its mask is exactly the set of pixels the
defect replaced, so outside the mask a defective image equals its clean twin
(``render_sample`` returns both, for tests and for looking at the data).

Only numpy and PIL are imported. anomalib's ``generate_perlin_noise`` draws from torch's
global generator (and importing torch alone costs about a second), so the Perlin noise
here is a small numpy port of the same algorithm that takes an explicit generator.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# The order is part of the seeding: append new names, never reorder.
CATEGORIES = ("tile", "leather", "grid")
DEFECTS = ("scratch", "hole", "stain", "broken")

_CATEGORY_ID = {name: i for i, name in enumerate(CATEGORIES)}
# Split ids for the seed: 0 train/good, 1 test/good, 2.. test/<defect>.
_SPLIT_ID = {"train": 0, "good": 1, **{d: 2 + i for i, d in enumerate(DEFECTS)}}
_MIN_IMAGE_SIZE = 32
_OUR_FILE = re.compile(r"^(\d{3,})(_mask)?\.png$")
# In the dataset root: the generator may rewrite (and prune) the numbered images below it.
MARKER = ".adrun-synthetic"
MARKER_TEXT = (
    "Written by adrun's synthetic generator (adrun make-data, data.format: synthetic).\n"
    "adrun rewrites and removes the numbered images below this folder; it writes into no folder without this file.\n"
)


def make_dataset(
    out_dir: str | Path,
    categories: Sequence[str] = CATEGORIES,
    seed: int = 0,
    image_size: int = 128,
    n_train: int = 16,
    n_test_good: int = 6,
    n_test_defect: int = 3,
) -> Path:
    """Write <out_dir>/<category>/{train/good, test/good, test/<defect>,
    ground_truth/<defect>/NNN_mask.png}; return out_dir.

    ``n_test_defect`` is per defect type, so each category's test split holds
    ``n_test_good + len(DEFECTS) * n_test_defect`` images. Running it again with the
    same arguments rewrites identical bytes; numbered PNGs left over from an earlier,
    larger run are removed so that the tree always matches the arguments.

    ``out_dir`` must be new, empty, or a folder this function wrote before (``claim``):
    MVTec AD names its files ``000.png`` too, and a real dataset is never overwritten.
    """
    if isinstance(categories, str):
        categories = (categories,)
    unknown = [c for c in categories if c not in _CATEGORY_ID]
    if unknown:
        raise ValueError(
            f"unknown synthetic categor{'y' if len(unknown) == 1 else 'ies'} "
            f"{', '.join(map(repr, unknown))}; choose from {', '.join(CATEGORIES)}"
        )
    _check_args(seed, image_size)
    for name, n, least in (
        ("n_train", n_train, 1),
        ("n_test_good", n_test_good, 1),
        ("n_test_defect", n_test_defect, 0),
    ):
        if not isinstance(n, int) or n < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {n!r}")

    out = Path(out_dir)
    claim(out)
    for category in dict.fromkeys(categories):  # keep order, drop repeats
        root = out / category
        _write_split(
            root / "train" / "good",
            n_train,
            lambda i, c=category: render_sample(c, None, seed, i, image_size, split="train"),
        )
        _write_split(
            root / "test" / "good",
            n_test_good,
            lambda i, c=category: render_sample(c, None, seed, i, image_size),
        )
        for defect in DEFECTS:
            _write_split(
                root / "test" / defect,
                n_test_defect,
                lambda i, c=category, d=defect: render_sample(c, d, seed, i, image_size),
                mask_dir=root / "ground_truth" / defect,
            )
    return out


def render_sample(
    category: str,
    defect: str | None,
    seed: int = 0,
    index: int = 0,
    image_size: int = 128,
    split: str = "test",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one sample as ``(clean, image, mask)``, exactly as ``make_dataset`` writes it.

    ``clean`` and ``image`` are ``(H, W, 3)`` uint8 and ``mask`` is ``(H, W)`` uint8 in
    {0, 255}. With ``defect=None`` the image is normal: ``image`` is ``clean`` and the
    mask is empty. ``split="train"`` selects the training images (only normal ones).
    """
    if category not in _CATEGORY_ID:
        raise ValueError(f"unknown synthetic category {category!r}; choose from {', '.join(CATEGORIES)}")
    if defect is not None and defect not in DEFECTS:
        raise ValueError(f"unknown defect {defect!r}; choose from {', '.join(DEFECTS)}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if split == "train" and defect is not None:
        raise ValueError("the train split holds only normal images")
    _check_args(seed, image_size)

    split_id = _SPLIT_ID["train" if split == "train" else (defect or "good")]
    rng = np.random.default_rng([seed, _CATEGORY_ID[category], split_id, index])
    texture = _TEXTURES[category](rng, image_size)
    clean = _to_uint8(texture)
    if defect is None:
        return clean, clean.copy(), np.zeros((image_size, image_size), np.uint8)

    painted, region = _DEFECTS[defect](rng, texture, category)
    image = clean.copy()
    image[region] = _to_uint8(painted)[region]  # outside the region, not one byte moves
    return clean, image, region.astype(np.uint8) * 255


# ---------------------------------------------------------------------------------------------
# Writing


def refusal(out: Path) -> str | None:
    """Why the generator may not write into ``out``, or None when it may."""
    out = Path(out)
    if (out / MARKER).is_file():
        return None
    if out.exists() and not out.is_dir():
        return f"{out} is a file; pass a new or empty folder for the synthetic dataset"
    if out.is_dir() and any(out.iterdir()):
        return (
            f"{out} holds files adrun did not write (it has no {MARKER}); the synthetic generator writes only "
            "into a new or empty folder, never over a real dataset: pass another folder, or read this one with "
            "data.format: mvtec (or folder); if an older adrun generated it, delete it and run again"
        )
    return None


def claim(out: Path) -> None:
    """Make sure ``out`` is the generator's to write: new, empty, or holding its ``MARKER``.

    Anything else is a ``DataError``, before a single file is touched: the images there
    may be someone's only copy of a real dataset.
    """
    from adrun.errors import DataError
    from adrun.records import atomic_write_text

    refused = refusal(out)
    if refused:
        raise DataError(refused)
    if (out / MARKER).is_file():
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / MARKER, MARKER_TEXT)
    except OSError as exc:
        raise DataError(f"{out}: cannot write there ({exc.strerror or exc}); pass a writable folder") from None


def _check_args(seed: int, image_size: int) -> None:
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(image_size, int) or image_size < _MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be an integer >= {_MIN_IMAGE_SIZE}, got {image_size!r}")


def _write_split(folder: Path, n: int, render, mask_dir: Path | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if mask_dir is not None:
        mask_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        _, image, mask = render(i)
        _write_png(folder / f"{i:03d}.png", image)
        if mask_dir is not None:
            _write_png(mask_dir / f"{i:03d}_mask.png", mask)
    for d in (folder, mask_dir):
        if d is not None:
            _remove_stale(d, n)


def _write_png(path: Path, array: np.ndarray) -> None:
    # A temp name that does not end in .png, so a crash never leaves a half file that
    # anomalib would pick up as an image.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        Image.fromarray(array).save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _remove_stale(folder: Path, n: int) -> None:
    for path in folder.iterdir():
        match = _OUR_FILE.match(path.name)
        if match and int(match.group(1)) >= n:
            path.unlink()


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Noise


def _perlin(rng: np.random.Generator, size: int, cells: float) -> np.ndarray:
    """Perlin gradient noise on a ``size``x``size`` grid with ``cells`` lattice cells per side.

    The same construction as anomalib's ``generate_perlin_noise`` (random unit gradients,
    quintic fade, ``sqrt(2)`` scaling, values roughly in [-1, 1]), with an explicit generator.
    """
    n = int(math.ceil(cells)) + 1
    angles = rng.uniform(0.0, 2.0 * math.pi, (n, n))
    gx, gy = np.cos(angles), np.sin(angles)
    t = (np.arange(size) + 0.5) * (cells / size)
    i = np.floor(t).astype(int)
    f = t - i
    iy, ix = i[:, None], i[None, :]
    fy, fx = f[:, None], f[None, :]

    def corner(dy: int, dx: int) -> np.ndarray:
        return gx[iy + dy, ix + dx] * (fx - dx) + gy[iy + dy, ix + dx] * (fy - dy)

    def fade(u: np.ndarray) -> np.ndarray:
        return u * u * u * (u * (u * 6 - 15) + 10)

    ux, uy = fade(fx), fade(fy)
    top = corner(0, 0) + ux * (corner(0, 1) - corner(0, 0))
    bottom = corner(1, 0) + ux * (corner(1, 1) - corner(1, 0))
    return math.sqrt(2.0) * (top + uy * (bottom - top))


def _lighting(rng: np.random.Generator, size: int, strength: float) -> np.ndarray:
    """A gentle multiplicative light field: a random tilt plus a low-frequency Perlin swell."""
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    angle = rng.uniform(0, 2 * math.pi)
    tilt = (np.cos(angle) * xx + np.sin(angle) * yy) * rng.uniform(0, strength)
    swell = _perlin(rng, size, 2.0) * strength * 0.5
    return (1.0 + tilt + swell)[..., None]


# ---------------------------------------------------------------------------------------------
# Textures: each returns float RGB in [0, 1] of shape (size, size, 3). Every normal image
# differs in phase, colour, lighting and noise, so the normal class is a distribution.


def _tile(rng: np.random.Generator, size: int) -> np.ndarray:
    period = size / 5.0 * rng.uniform(0.97, 1.03)  # five tiles across
    grout = max(2.0, period * 0.11)
    ox, oy = rng.uniform(0, period, 2)
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    u, v = (xx + ox) / period, (yy + oy) / period
    iu, iv = np.floor(u).astype(int), np.floor(v).astype(int)
    in_grout = ((u - iu) * period < grout) | ((v - iv) * period < grout)

    base = np.array([0.74, 0.72, 0.68]) * rng.uniform(0.94, 1.06) + rng.normal(0, 0.01, 3)
    n_tiles = int(size / period) + 3
    tile_gain = 1.0 + rng.normal(0, 0.035, (n_tiles, n_tiles, 1)) + rng.normal(0, 0.01, (n_tiles, n_tiles, 3))
    img = base * tile_gain[iv, iu]
    # Terrazzo-like speckle inside the tiles: a few dark and light flecks.
    fleck = rng.random((size, size))
    img = img - 0.16 * (fleck < 0.025)[..., None] + 0.08 * (fleck > 0.985)[..., None]
    grout_colour = np.array([0.42, 0.41, 0.40]) * rng.uniform(0.92, 1.08)
    img = np.where(in_grout[..., None], grout_colour, img)
    img = img * _lighting(rng, size, 0.10)
    return np.clip(img + rng.normal(0, 0.015, img.shape), 0, 1)


def _leather(rng: np.random.Generator, size: int) -> np.ndarray:
    base = np.array([0.52, 0.34, 0.21]) * rng.uniform(0.93, 1.07) + rng.normal(0, 0.01, 3)
    # Grain: ridged Perlin noise draws the little creases between the pebbles; a finer
    # layer and pixel noise give the surface its tooth.
    cell = size / 10.0
    crease = 1.0 - np.abs(_perlin(rng, size, size / cell))
    crease = crease**6
    pebble = _perlin(rng, size, size / (cell * 0.5))
    shade = 1.0 - 0.30 * crease + 0.05 * pebble + rng.normal(0, 0.025, (size, size))
    img = base * shade[..., None] * _lighting(rng, size, 0.10)
    return np.clip(img + rng.normal(0, 0.008, img.shape), 0, 1)


def _grid(rng: np.random.Generator, size: int) -> np.ndarray:
    period = size / 10.0 * rng.uniform(0.97, 1.03)  # ten wires across
    half_width = max(1.0, period * 0.11)
    angle = math.radians(rng.uniform(-2.0, 2.0))
    ox, oy = rng.uniform(0, period, 2)
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    u = xx * math.cos(angle) + yy * math.sin(angle) + ox
    v = -xx * math.sin(angle) + yy * math.cos(angle) + oy

    def wires(t: np.ndarray, shift: float) -> np.ndarray:
        d = np.abs((t + shift) / period - np.round((t + shift) / period)) * period
        return np.exp(-((d / half_width) ** 2))

    bright = np.maximum(wires(u, 0.0), wires(v, 0.0))
    shadow = np.maximum(wires(u, -1.6 * half_width), wires(v, -1.6 * half_width))
    background = 0.33 * rng.uniform(0.9, 1.1) + 0.03 * _perlin(rng, size, 3.0)
    grey = background * (1.0 - 0.5 * shadow) * (1.0 - bright) + 0.82 * rng.uniform(0.95, 1.05) * bright
    tint = np.array([1.0, 1.0, 0.97]) + rng.normal(0, 0.01, 3)
    img = grey[..., None] * tint * _lighting(rng, size, 0.08)
    return np.clip(img + rng.normal(0, 0.015, img.shape), 0, 1)


_TEXTURES = {"tile": _tile, "leather": _leather, "grid": _grid}


# ---------------------------------------------------------------------------------------------
# Defects: each returns (painted float image, boolean region). Only the region is copied into
# the clean image, so the region *is* the mask. Sizes are fractions of the image side, so a
# defect covers roughly 1-8% of the image at any image_size.


def _centre(rng: np.random.Generator, size: int, margin: float) -> tuple[float, float]:
    lo, hi = margin, size - margin
    return rng.uniform(lo, hi), rng.uniform(lo, hi)


def _contrast(texture: np.ndarray, region: np.ndarray) -> float:
    """Bright on dark surfaces and dark on bright ones, so the defect always shows."""
    return 0.06 if texture[region].mean() > 0.45 else 0.95


def _scratch(rng: np.random.Generator, texture: np.ndarray, category: str) -> tuple[np.ndarray, np.ndarray]:
    size = texture.shape[0]
    length = size * rng.uniform(0.35, 0.6)
    cx, cy = _centre(rng, size, size * 0.2)
    angle = rng.uniform(0, math.pi)
    dx, dy = math.cos(angle) * length / 2, math.sin(angle) * length / 2
    bend = rng.uniform(-0.25, 0.25) * length  # a quadratic Bezier: straight to gently curved
    p0, p2 = np.array([cx - dx, cy - dy]), np.array([cx + dx, cy + dy])
    p1 = np.array([cx, cy]) + bend * np.array([-math.sin(angle), math.cos(angle)])
    t = np.linspace(0, 1, 48)[:, None]
    points = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
    width = max(2, round(size * rng.uniform(0.018, 0.026)))
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).line([tuple(p) for p in points], fill=255, width=width, joint="curve")
    region = np.asarray(canvas) > 0
    level = _contrast(texture, region)
    painted = np.full_like(texture, level) + rng.normal(0, 0.02, texture.shape)
    return painted, region


def _blob_region(rng: np.random.Generator, size: int, radius: float, roughness: float) -> np.ndarray:
    """An irregular disk: a radius that wobbles with a few random harmonics."""
    cx, cy = _centre(rng, size, radius * 1.5)
    yy, xx = np.mgrid[0:size, 0:size]
    theta = np.arctan2(yy - cy, xx - cx)
    wobble = sum(
        rng.uniform(-roughness, roughness) / k * np.cos(k * theta + rng.uniform(0, 2 * math.pi)) for k in range(2, 6)
    )
    return np.hypot(xx - cx, yy - cy) <= radius * (1.0 + wobble)


def _hole(rng: np.random.Generator, texture: np.ndarray, category: str) -> tuple[np.ndarray, np.ndarray]:
    size = texture.shape[0]
    radius = size * rng.uniform(0.06, 0.1)
    region = _blob_region(rng, size, radius, 0.5)
    # A dark pit, a little lighter towards one rim as if lit from the side.
    yy, xx = np.mgrid[0:size, 0:size] / size
    rim = 0.05 * (xx - yy)
    painted = (0.05 + rim[..., None] + rng.normal(0, 0.015, texture.shape)) * np.array([1.0, 0.95, 0.9])
    return painted, region


def _stain(rng: np.random.Generator, texture: np.ndarray, category: str) -> tuple[np.ndarray, np.ndarray]:
    size = texture.shape[0]
    # Perlin noise under a Gaussian envelope, cut at the level that keeps the target area:
    # a splotchy, irregular blob.
    radius = size * rng.uniform(0.11, 0.16)
    cx, cy = _centre(rng, size, radius * 1.3)
    yy, xx = np.mgrid[0:size, 0:size]
    envelope = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * radius**2))
    field = envelope * (1.0 + 0.6 * _perlin(rng, size, 8.0))
    area = rng.uniform(0.02, 0.05) * size * size
    region = field >= np.sort(field, axis=None)[-int(area)]
    colours = {"tile": (0.45, 0.28, 0.12), "leather": (0.18, 0.28, 0.38), "grid": (0.85, 0.45, 0.10)}
    colour = np.array(colours[category]) * rng.uniform(0.85, 1.15)
    alpha = rng.uniform(0.65, 0.85)
    painted = texture * (1 - alpha) + colour * alpha
    return painted, region


# How a patch breaks, per texture: tiles and wires rotate out of line; leather keeps no lines,
# so its patch is rescaled (stretched grain) and darkened like a scuffed, torn-up spot.
# Each entry: (rotation range in degrees, sampling scale (< 1 magnifies), brightness gain).
_BREAK = {
    "tile": ((20.0, 70.0), 1.0, 0.75),
    "grid": ((25.0, 65.0), 1.0, 1.0),
    "leather": ((0.0, 360.0), 0.35, 0.7),
}


def _broken(rng: np.random.Generator, texture: np.ndarray, category: str) -> tuple[np.ndarray, np.ndarray]:
    size = texture.shape[0]
    (lo, hi), scale, gain = _BREAK[category]
    # Wider than a tile, so the patch always takes some grout lines with it.
    radius = size * rng.uniform(0.13, 0.17)
    cx, cy = _centre(rng, size, radius * 1.2)
    # A jagged polygon: a broken-off chunk rather than a neat disk.
    n = int(rng.integers(5, 9))
    angles = (np.arange(n) + rng.uniform(-0.3, 0.3, n)) * (2 * math.pi / n) + rng.uniform(0, 2 * math.pi)
    radii = radius * rng.uniform(0.7, 1.0, n)
    polygon = [(cx + r * math.cos(a), cy + r * math.sin(a)) for a, r in zip(angles, radii, strict=True)]
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).polygon(polygon, fill=255)
    region = np.asarray(canvas) > 0

    # Rotate (and scale) the texture about the patch centre. Points within `radius` of the
    # centre map to points within `radius`, so the patch never samples outside the image.
    theta = math.radians(rng.uniform(lo, hi)) * rng.choice([-1, 1])
    c, s = math.cos(theta) * scale, math.sin(theta) * scale
    # PIL's affine maps output (x, y) to input (a x + b y + c, d x + e y + f).
    coeffs = (c, -s, cx - c * cx + s * cy, s, c, cy - s * cx - c * cy)
    source = Image.fromarray(_to_uint8(texture))
    warped = source.transform((size, size), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR)
    painted = np.asarray(warped, dtype=float) / 255.0 * gain
    return painted, region


_DEFECTS = {"scratch": _scratch, "hole": _hole, "stain": _stain, "broken": _broken}
