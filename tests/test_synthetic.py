"""The synthetic MVTec-layout dataset: layout, exact masks, determinism, and that defects show."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from adrun.synthetic import CATEGORIES, DEFECTS, MARKER, make_dataset, render_sample

SMALL = {"image_size": 64, "n_train": 4, "n_test_good": 2, "n_test_defect": 2}


def read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MARKER  # the images, not adrun's note that they are its own
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """The default dataset, written once for the tests that only read it."""
    return make_dataset(tmp_path_factory.mktemp("synthetic"))


def test_layout_and_counts_are_mvtec_ad(dataset):
    # The categories, and the marker that lets adrun rewrite this folder (and no other).
    assert sorted(p.name for p in dataset.iterdir()) == sorted([*CATEGORIES, MARKER])
    for category in CATEGORIES:
        root = dataset / category
        assert sorted(p.name for p in (root / "test").iterdir()) == sorted(("good", *DEFECTS))
        assert sorted(p.name for p in (root / "ground_truth").iterdir()) == sorted(DEFECTS)
        assert names(root / "train" / "good") == [f"{i:03d}.png" for i in range(16)]
        assert names(root / "test" / "good") == [f"{i:03d}.png" for i in range(6)]
        for defect in DEFECTS:
            assert names(root / "test" / defect) == [f"{i:03d}.png" for i in range(3)]
            assert names(root / "ground_truth" / defect) == [f"{i:03d}_mask.png" for i in range(3)]
    assert not [p for p in dataset.rglob("*") if p.is_file() and p.suffix != ".png" and p.name != MARKER]


def test_anomalib_reads_the_layout(dataset):
    # anomalib's own parser pairs each defect image with its mask by file stem and raises
    # on a mismatch; importing it costs a few seconds, so this is the one test that does.
    from anomalib.data.datasets.image.mvtecad import make_mvtec_ad_dataset

    samples = make_mvtec_ad_dataset(dataset / "grid")
    assert (samples.split == "train").sum() == 16
    test = samples[samples.split == "test"]
    assert len(test) == 6 + 3 * len(DEFECTS)
    assert (test.label_index == 1).sum() == 3 * len(DEFECTS)
    assert samples.attrs["task"] == "segmentation"


def test_images_are_rgb_and_masks_binary_and_sized(dataset):
    for category in CATEGORIES:
        root = dataset / category
        for path in root.glob("t*/*/*.png"):
            image = Image.open(path)
            assert (image.mode, image.size) == ("RGB", (128, 128)), path
        for defect in DEFECTS:
            for path in sorted((root / "ground_truth" / defect).iterdir()):
                mask = Image.open(path)
                assert (mask.mode, mask.size) == ("L", (128, 128)), path
                values = read(path)
                assert set(np.unique(values)) == {0, 255}, path
                # Visible but local: roughly 1-8% of the image.
                assert 0.005 < (values > 0).mean() < 0.10, path


def test_written_files_are_the_rendered_samples(dataset):
    for category in CATEGORIES:
        root = dataset / category
        _, image, _ = render_sample(category, None, 0, 5, split="train")
        assert np.array_equal(read(root / "train" / "good" / "005.png"), image)
        _, image, _ = render_sample(category, None, 0, 5)
        assert np.array_equal(read(root / "test" / "good" / "005.png"), image)
        for defect in DEFECTS:
            _, image, mask = render_sample(category, defect, 0, 2)
            assert np.array_equal(read(root / "test" / defect / "002.png"), image)
            assert np.array_equal(read(root / "ground_truth" / defect / "002_mask.png"), mask)


@pytest.mark.parametrize("category", CATEGORIES)
@pytest.mark.parametrize("defect", DEFECTS)
def test_mask_is_exactly_the_changed_pixels(category, defect):
    for index in range(3):
        clean, image, mask = render_sample(category, defect, seed=0, index=index)
        changed = (clean != image).any(axis=2)
        inside = mask > 0
        assert not (changed & ~inside).any(), "a pixel outside the mask changed"
        assert changed[inside].mean() > 0.97, "the mask claims pixels the defect left alone"


def test_normal_samples_have_empty_masks_and_vary():
    for category in CATEGORIES:
        samples = [render_sample(category, None, 0, i, split="train") for i in range(3)]
        for clean, image, mask in samples:
            assert np.array_equal(clean, image) and not mask.any()
        assert not np.array_equal(samples[0][1], samples[1][1])
        # The variation is more than pixel noise (phase, colour, light).
        diff = np.abs(samples[0][1].astype(int) - samples[1][1].astype(int)).mean()
        assert diff > 5, category


def test_same_arguments_give_identical_bytes_and_rewriting_is_idempotent(tmp_path):
    first = digests(make_dataset(tmp_path / "a", **SMALL))
    assert first == digests(make_dataset(tmp_path / "b", **SMALL))
    assert first == digests(make_dataset(tmp_path / "a", **SMALL))


def test_rewriting_smaller_removes_stale_numbered_files(tmp_path):
    make_dataset(tmp_path, categories=["tile"], **{**SMALL, "n_train": 6, "n_test_defect": 3})
    keep = tmp_path / "tile" / "test" / "notes.txt"
    keep.write_text("not ours")
    make_dataset(tmp_path / "fresh", categories=["tile"], **SMALL)
    make_dataset(tmp_path, categories=["tile"], **SMALL)
    keep.unlink()
    assert digests(tmp_path / "tile") == digests(tmp_path / "fresh" / "tile")


def test_different_seed_gives_different_images(tmp_path):
    make_dataset(tmp_path / "s0", categories=["grid"], seed=0, **SMALL)
    make_dataset(tmp_path / "s1", categories=["grid"], seed=1, **SMALL)
    a, b = digests(tmp_path / "s0"), digests(tmp_path / "s1")
    assert a.keys() == b.keys()
    assert all(a[k] != b[k] for k in a)


def test_a_category_does_not_depend_on_the_others_requested(tmp_path):
    make_dataset(tmp_path / "all", **SMALL)
    make_dataset(tmp_path / "one", categories=["leather"], **SMALL)
    make_dataset(tmp_path / "two", categories=("grid", "leather"), **SMALL)
    expected = digests(tmp_path / "all" / "leather")
    assert digests(tmp_path / "one" / "leather") == expected
    assert digests(tmp_path / "two" / "leather") == expected
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == [MARKER, "leather"]


def test_train_and_test_good_images_differ(tmp_path):
    root = make_dataset(tmp_path, categories=["tile"], **SMALL) / "tile"
    assert (root / "train" / "good" / "000.png").read_bytes() != (root / "test" / "good" / "000.png").read_bytes()


def test_unknown_category_names_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="carpet") as info:
        make_dataset(tmp_path, categories=["tile", "carpet"])
    for name in CATEGORIES:
        assert name in str(info.value)
    assert not (tmp_path / "tile").exists(), "nothing is written before the arguments are checked"


@pytest.mark.parametrize(
    "bad", [{"seed": -1}, {"image_size": 8}, {"n_train": 0}, {"n_test_good": 0}, {"n_test_defect": -1}]
)
def test_bad_arguments_raise_value_error(tmp_path, bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        make_dataset(tmp_path, **bad)


def _patch_scores(image: np.ndarray, memory: np.ndarray, patch: int) -> np.ndarray:
    """Distance from each image patch (stride 2) to its nearest training patch: a raw-pixel Patchcore."""
    windows = sliding_window_view(image.astype(np.float32) / 255, (patch, patch), axis=(0, 1))[::2, ::2]
    side = windows.shape[0]
    x = windows.reshape(side * side, -1)
    d2 = (x**2).sum(1)[:, None] + (memory**2).sum(1)[None] - 2 * x @ memory.T
    return np.sqrt(np.maximum(d2.min(axis=1), 0)).reshape(side, side)


@pytest.mark.parametrize("category", CATEGORIES)
def test_defects_stand_out_from_the_texture_where_the_mask_says(category, tmp_path):
    # Guards against a misaligned mask (shifted, flipped, paired with the wrong image) and
    # against defects too faint to learn: patches under the mask must be far from every
    # normal training patch, patches clear of the mask close to one.
    patch = 6
    root = (
        make_dataset(tmp_path, categories=[category], image_size=64, n_train=16, n_test_good=1, n_test_defect=2)
        / category
    )
    train = np.stack([read(p) for p in sorted((root / "train" / "good").iterdir())]).astype(np.float32) / 255
    memory = sliding_window_view(train, (patch, patch), axis=(1, 2))[:, ::2, ::2]
    memory = memory.reshape(-1, 3 * patch * patch)
    for defect in DEFECTS:
        for index in range(2):
            image = read(root / "test" / defect / f"{index:03d}.png")
            mask = read(root / "ground_truth" / defect / f"{index:03d}_mask.png") > 0
            scores = _patch_scores(image, memory, patch)
            windows = sliding_window_view(mask, (patch, patch))[::2, ::2]
            under = windows[:, :, patch // 2, patch // 2]
            clear = ~windows.any(axis=(2, 3))
            ratio = scores[under].mean() / scores[clear].mean()
            assert ratio > 1.3, f"{category}/{defect}/{index}: inside/outside = {ratio:.2f}"
            flipped = windows[::-1, ::-1, patch // 2, patch // 2] & clear
            if flipped.any():  # the same mask in the wrong place sees only normal texture
                assert scores[flipped].mean() / scores[clear].mean() < 1.3
