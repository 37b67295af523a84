"""Every data.format: its layout check on a tiny fixture written in the real layout, the exact
one-line errors of a broken one, and a real ``adrun sweep --smoke`` through anomalib's own
datamodule that writes nothing into the dataset and downloads nothing.

The fixtures are a few 64 px images per split (PNG, JPG or BMP as each dataset has them),
made once per session; a test that breaks one copies it first.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_raw, write_yaml
from PIL import Image
from typer.testing import CliRunner

from adrun import data
from adrun.cli import app
from adrun.config import DataConfig
from adrun.datasets import FORMATS

SIZE = 64
RNG = np.random.default_rng(0)


def image(path: Path, defect: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = RNG.integers(90, 110, (SIZE, SIZE, 3), dtype=np.uint8)
    if defect:
        pixels[20:36, 20:36] = 255
    Image.fromarray(pixels).save(path)


def mask(path: Path, defect: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((SIZE, SIZE), dtype=np.uint8)
    if defect:
        pixels[20:36, 20:36] = 255
    Image.fromarray(pixels).save(path)


def mvtec_like(base: Path, normal="good", defect="crack", ext=".png", mask_name="{stem}_mask.png", masks=True) -> None:
    for i in range(5):
        image(base / "train" / normal / f"{i:03d}{ext}")
    for i in range(2):
        image(base / "test" / normal / f"{10 + i:03d}{ext}")
        image(base / "test" / defect / f"{i:03d}{ext}", defect=True)
        if masks:
            mask(base / "ground_truth" / defect / mask_name.format(stem=f"{i:03d}"))


def make(fmt: str, root: Path) -> str:
    """Write a tiny dataset of ``fmt`` under ``root``; return its category."""
    if fmt == "mvtec":
        mvtec_like(root / "bottle")
        return "bottle"
    if fmt == "mvtec_nomasks":  # image labels only
        mvtec_like(root / "bottle", masks=False)
        return "bottle"
    if fmt == "mpdd":
        mvtec_like(root / "bracket_black", defect="hole")
        return "bracket_black"
    if fmt == "folder":
        mvtec_like(root / "widget", ext=".jpg", mask_name="{stem}.png")
        return "widget"
    if fmt == "visa":
        mvtec_like(root / "visa_pytorch" / "candle", defect="bad", ext=".JPG", mask_name="{stem}.png")
        return "candle"
    if fmt == "btech":
        mvtec_like(root / "01", normal="ok", defect="ko", ext=".bmp", mask_name="{stem}.png")
        return "01"
    if fmt == "mvtec_ad2":
        base = root / "sheet_metal"
        for i in range(4):
            image(base / "train" / "good" / f"{i:03d}_regular.png")
        for i in range(2):
            image(base / "validation" / "good" / f"{i:03d}_regular.png")
            image(base / "test_public" / "good" / f"{i:03d}_regular.png")
            image(base / "test_public" / "bad" / f"{i:03d}_regular.png", defect=True)
            mask(base / "test_public" / "ground_truth" / "bad" / f"{i:03d}_regular_mask.png")
        return "sheet_metal"
    if fmt == "mvtec_loco":
        base = root / "breakfast_box"
        for i in range(4):
            image(base / "train" / "good" / f"{i:03d}.png")
        for i in range(2):
            image(base / "validation" / "good" / f"{i:03d}.png")
            image(base / "test" / "good" / f"{i:03d}.png")
            for defect in ("logical_anomalies", "structural_anomalies"):
                image(base / "test" / defect / f"{i:03d}.png", defect=True)
                mask(base / "ground_truth" / defect / f"{i:03d}" / "000.png")
        return "breakfast_box"
    if fmt == "kolektor":
        for k in range(3):
            for part in range(3):
                defect = (k, part) in {(0, 1), (2, 2)}
                image(root / f"kos{k + 1:02d}" / f"Part{part}.jpg", defect=defect)
                mask(root / f"kos{k + 1:02d}" / f"Part{part}_label.bmp", defect=defect)
        return "kolektor"
    if fmt == "realiad":
        base = root / "realiad_256" / "audiojack"
        listing: dict[str, list] = {"train": [], "test": []}
        for i in range(6):
            path = f"OK/S{i:04d}/audiojack_{i:04d}_OK_C1.jpg"
            image(base / path)
            listing["train" if i < 4 else "test"].append(
                {"category": "AK", "anomaly_class": "OK", "image_path": path, "mask_path": None}
            )
        for i in range(2):
            path = f"NG/AK/S{20 + i:04d}/audiojack_{20 + i:04d}_NG_AK_C1.jpg"
            image(base / path, defect=True)
            mask(base / path.replace(".jpg", ".png"))
            listing["test"].append(
                {"category": "AK", "anomaly_class": "AK", "image_path": path, "mask_path": path.replace(".jpg", ".png")}
            )
        jsons = root / "realiad_jsons" / "realiad_jsons"
        jsons.mkdir(parents=True)
        (jsons / "audiojack.json").write_text(json.dumps(listing))
        return "audiojack"
    raise AssertionError(fmt)


FIXTURES = [
    "mvtec",
    "mvtec_nomasks",
    "mvtec_ad2",
    "mvtec_loco",
    "visa",
    "btech",
    "mpdd",
    "kolektor",
    "realiad",
    "folder",
]


# The anomalib datamodule each fixture must be read by (an MVTec category without masks: Folder).
DATAMODULES = {
    "mvtec": "MVTecAD",
    "mvtec_nomasks": "Folder",
    "mvtec_ad2": "MVTecAD2",
    "mvtec_loco": "MVTecLOCO",
    "visa": "Visa",
    "btech": "BTech",
    "mpdd": "MPDD",
    "kolektor": "Kolektor",
    "realiad": "RealIAD",
    "folder": "Folder",
}


def format_of(fixture: str) -> str:
    return fixture.removesuffix("_nomasks")


@pytest.fixture(scope="session")
def datasets(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    base = tmp_path_factory.mktemp("datasets")
    return {name: (base / name, make(name, base / name)) for name in FIXTURES}


@pytest.fixture()
def copy_of(datasets, tmp_path):
    def copy(name: str) -> tuple[Path, str]:
        root, category = datasets[name]
        shutil.copytree(root, tmp_path / name)
        return tmp_path / name, category

    return copy


def tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_every_format_has_a_fixture_here():
    assert set(FORMATS) - {"synthetic"} == {format_of(f) for f in FIXTURES}


@pytest.mark.parametrize("fixture", FIXTURES)
def test_layout_check_passes_on_the_real_layout(datasets, fixture):
    root, category = datasets[fixture]
    assert data.layout_problems(root, category, DataConfig(format=format_of(fixture))) == []


# (fixture, how to break it, the exact lines; {r} is the root, {c} the category folder)
BREAKS = {
    "mvtec: mask folder missing": (
        "mvtec",
        lambda r: shutil.rmtree(r / "bottle/ground_truth/crack"),
        [
            "category 'bottle': {r}/bottle/ground_truth/crack is missing; every test/<defect> needs "
            "ground_truth/<defect>/*_mask.png"
        ],
    ),
    "mvtec: category missing": (
        "mvtec",
        lambda r: shutil.move(r / "bottle", r / "other"),
        ["category 'bottle': folder {r}/bottle is missing; categories under {r}: other"],
    ),
    "mpdd: train split missing": (
        "mpdd",
        lambda r: shutil.rmtree(r / "bracket_black/train"),
        [
            "category 'bracket_black': {r}/bracket_black/train/good has no .png images; MPDD layout needs "
            "<category>/train/good/*"
        ],
    ),
    "visa: raw download only": (
        "visa",
        lambda r: (shutil.rmtree(r / "visa_pytorch"), (r / "candle/Data/Images/Normal").mkdir(parents=True)),
        [
            "category 'candle': {r} holds VisA's raw download but not the split tree {r}/visa_pytorch/candle that "
            'anomalib reads, and adrun never writes into a dataset; convert it once yourself with python -c "from '
            "anomalib.data import Visa; Visa(root='{r}', category='candle').prepare_data()\" (it writes visa_pytorch/ "
            "there)"
        ],
    ),
    "visa: mask misnamed": (
        "visa",
        lambda r: (r / "visa_pytorch/candle/ground_truth/bad/001.png").rename(
            r / "visa_pytorch/candle/ground_truth/bad/x1.png"
        ),
        [
            "category 'candle': {r}/visa_pytorch/candle/test/bad/001.JPG has no mask (expected "
            "ground_truth/<defect>/001.png); {r}/visa_pytorch/candle/ground_truth/bad/x1.png matches no image; name "
            "each mask <image>.png, as VisA's split tree does"
        ],
    ),
    "btech: a mask missing": (
        "btech",
        lambda r: (r / "01/ground_truth/ko/001.png").unlink(),
        [
            "category '01': {r}/01/test/ko/001.bmp has no mask (expected ground_truth/<defect>/001.png); name each "
            "mask <image>.png (a PNG whatever the image's type), as BTech does"
        ],
    ),
    "mvtec_ad2: validation missing": (
        "mvtec_ad2",
        lambda r: shutil.rmtree(r / "sheet_metal/validation"),
        [
            "category 'sheet_metal': {r}/sheet_metal/validation/good has no .png images; MVTec AD 2 layout needs "
            "<category>/validation/good/*.png"
        ],
    ),
    "mvtec_ad2: a mask missing": (
        "mvtec_ad2",
        lambda r: (r / "sheet_metal/test_public/ground_truth/bad/000_regular_mask.png").unlink(),
        [
            "category 'sheet_metal': {r}/sheet_metal/test_public/bad/000_regular.png has no mask (expected "
            "{r}/sheet_metal/test_public/ground_truth/bad/000_regular_mask.png); every test_public/bad image needs "
            "test_public/ground_truth/bad/<image>_mask.png"
        ],
    ),
    "mvtec_loco: mask folder missing": (
        "mvtec_loco",
        lambda r: shutil.rmtree(r / "breakfast_box/ground_truth/logical_anomalies/001"),
        [
            "category 'breakfast_box': {r}/breakfast_box/test/logical_anomalies/001.png has no masks (expected "
            "{r}/breakfast_box/ground_truth/logical_anomalies/001/000.png); every anomalous image needs its own folder "
            "of masks, ground_truth/<defect>/<image>/*.png"
        ],
    ),
    "kolektor: a label missing": (
        "kolektor",
        lambda r: (r / "kos02/Part0_label.bmp").unlink(),
        [
            "category 'kolektor': {r}/kos02/Part0.jpg has no mask (expected Part0_label.bmp beside it); every image "
            "needs its <image>_label.bmp"
        ],
    ),
    "realiad: json missing": (
        "realiad",
        lambda r: (r / "realiad_jsons/realiad_jsons/audiojack.json").unlink(),
        [
            "category 'audiojack': {r}/realiad_jsons/realiad_jsons/audiojack.json is missing; Real-IAD lists each "
            "category's images there"
        ],
    ),
    "realiad: a listed image missing": (
        "realiad",
        lambda r: (r / "realiad_256/audiojack/OK/S0004/audiojack_0004_OK_C1.jpg").unlink(),
        [
            "category 'audiojack': {r}/realiad_256/audiojack/OK/S0004/audiojack_0004_OK_C1.jpg is listed in "
            "audiojack.json but missing"
        ],
    ),
    "folder: test split missing": (
        "folder",
        lambda r: shutil.rmtree(r / "widget/test"),
        ["category 'widget': {r}/widget/test is missing or empty; MVTec AD layout needs <category>/test/<defect>/*"],
    ),
}


@pytest.mark.parametrize("case", list(BREAKS))
def test_a_broken_layout_is_one_exact_line(copy_of, case):
    fixture, breaks, expected = BREAKS[case]
    root, category = copy_of(fixture)
    breaks(root)
    assert data.layout_problems(root, category, DataConfig(format=format_of(fixture))) == [
        line.format(r=root) for line in expected
    ]


@pytest.mark.parametrize("fmt", sorted(set(FORMATS) - {"synthetic", "folder"}))
def test_a_missing_dataset_names_adrun_fetch_where_anomalib_can_download(tmp_path, fmt):
    spec = FORMATS[fmt]
    category = (spec.categories or ("anything",))[0]
    lines = data.layout_problems(tmp_path / "nowhere", category, DataConfig(format=fmt))
    get = (
        f"run `adrun fetch CONFIG` to download {spec.title} there" if spec.fetchable else f"download {spec.title} there"
    )
    assert lines == [
        f"data.root {tmp_path / 'nowhere'} does not exist; {get}, set data.root (or --root, or "
        "ADRUN_DATA_ROOT), or use data.format: synthetic"
    ]
    assert not (tmp_path / "nowhere").exists()
    assert spec.fetchable == (fmt in {"mvtec", "mvtec_ad2", "visa", "kolektor"})


def test_fetch_lists_the_dataset_of_a_fetchable_format_and_downloads_nothing_itself(tmp_path):
    from adrun import fetch
    from adrun.config import validate

    raw = tiny_raw(tmp_path / "r", format="visa", root=str(tmp_path / "visa"), categories=["candle"])
    items = [(i.kind, i.name, i.present) for i in fetch.items(validate(raw, "c.yaml"))]
    assert ("dataset", "candle", False) in items
    assert not (tmp_path / "visa").exists()


def test_sweep_refuses_a_raw_visa_download_and_leaves_it_alone(tmp_path):
    root = tmp_path / "visa"
    image(root / "candle" / "Data" / "Images" / "Normal" / "0000.JPG")
    before = tree_hash(root)
    raw = tiny_raw(tmp_path / "r", format="visa", root=str(root), categories=["candle"])
    result = CliRunner().invoke(app, ["sweep", str(write_yaml(tmp_path / "c.yaml", raw))])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"adrun: error: category 'candle': {root} holds VisA's raw download")
    assert tree_hash(root) == before and not (root / "visa_pytorch").exists()


# --------------------------------------------------------------------------- real sweeps


def smoke_config(tmp_path: Path, fmt: str, root: Path, category: str) -> Path:
    raw = tiny_raw(tmp_path / "r", format=fmt, root=str(root), categories=[category], num_workers=0)
    raw["models"] = raw["models"][:1]  # Patchcore, resnet18, pre_trained false, 64 px
    return write_yaml(tmp_path / "c.yaml", raw)


@pytest.mark.slow
@pytest.mark.parametrize("fixture", FIXTURES)
def test_smoke_sweep_runs_through_anomalibs_datamodule_and_leaves_the_dataset_alone(
    datasets, tmp_path, fixture, monkeypatch
):
    import anomalib.data.utils.download as download

    def no_download(*args, **kwargs):
        raise AssertionError(f"download attempted: {args}")

    monkeypatch.setattr(download, "download_and_extract", no_download)
    root, category = datasets[fixture]
    before = tree_hash(root)
    config = smoke_config(tmp_path, format_of(fixture), root, category)
    result = CliRunner().invoke(app, ["sweep", str(config), "--smoke"])
    assert result.exit_code == 0, result.output
    assert tree_hash(root) == before
    exp = tmp_path / "r" / "smoke" / "tiny"
    record = json.loads((exp / "runs" / "patchcore" / category / "seed-42" / "record.json").read_text())
    assert record["status"] == "success", record["error"]
    assert record["datamodule"] == f"anomalib.data.{DATAMODULES[fixture]}"
    assert 0.0 <= record["metrics"]["image_AUROC"] <= 1.0
    table = (exp / "pixel_auroc.md").read_text()
    if fixture.endswith("_nomasks"):
        assert "pixel_AUROC" not in record["metrics"]
        assert record["unavailable"]["pixel_AUROC"] == "not available: the test set has no ground-truth masks"
        assert f"| {category} | n/a |" in table
        assert (exp / "pixel_auroc.csv").read_text().splitlines()[1].startswith(f"{category},n/a,")
    else:
        assert 0.0 <= record["metrics"]["pixel_AUROC"] <= 1.0
        assert record["unavailable"] == {}
        assert f"| {category} | {record['metrics']['pixel_AUROC']:.3f} |" in table


def test_readme_lists_every_format_with_its_layout():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for spec in FORMATS.values():
        assert f"- `{spec.name}` (anomalib `" in readme and f"`{spec.layout}`" in readme, spec.name
