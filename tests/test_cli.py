"""End to end through the real CLI on tiny synthetic data, both models."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_path, tiny_raw, write_yaml
from typer.testing import CliRunner

from adrun.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """One tiny sweep (patchcore + efficient_ad on tile), shared by the tests below."""
    base = tmp_path_factory.mktemp("sweep")
    config = write_yaml(base / "tiny.yaml", tiny_raw(base / "results"))
    result = invoke("sweep", config)
    return base, config, result


@pytest.mark.slow
def test_sweep_writes_records_and_tables(swept):
    base, _, result = swept
    assert result.exit_code == 0, result.output
    exp = base / "results" / "tiny"
    for label in ("patchcore", "efficient_ad"):
        record = json.loads((run_path(exp, label, "tile") / "record.json").read_text())
        assert record["status"] == "success"
        assert list(record["metrics"]) == ["pixel_AUROC", "image_AUROC", "pixel_AUPRO", "image_F1Max"]
        assert 0.0 <= record["metrics"]["pixel_AUROC"] <= 1.0
        assert record["seed"] == 42 and record["versions"]["anomalib"].startswith("2.7")
        assert record["config"]["model"]["name"] == label
        assert (run_path(exp, label, "tile") / record["checkpoint"]).stat().st_size > 0
    table = pd.read_csv(exp / "pixel_auroc.csv", index_col=0)
    assert list(table.columns) == [
        "patchcore",
        "patchcore std",
        "patchcore n",
        "efficient_ad",
        "efficient_ad std",
        "efficient_ad n",
    ]
    assert table.loc["tile", "patchcore n"] == 1 and pd.isna(table.loc["tile", "patchcore std"])
    assert list(table.index) == ["tile", "mean"]
    patchcore = json.loads((exp / "runs/patchcore/tile/seed-42/record.json").read_text())
    assert table.loc["tile", "patchcore"] == pytest.approx(patchcore["metrics"]["pixel_AUROC"], abs=1e-6)
    md = (exp / "pixel_auroc.md").read_text().splitlines()
    assert md[0] == "# pixel AUROC: tiny"  # the title names the metric and the experiment
    assert md[2] == "| category | patchcore | efficient_ad |"
    assert md[4].startswith(f"| tile | {patchcore['metrics']['pixel_AUROC']:.3f} |")
    assert md[5].startswith("| **mean** |")
    assert (exp / "image_auroc.md").read_text().startswith("# image AUROC: tiny\n")
    long = pd.read_csv(exp / "metrics.csv")
    assert list(long.columns) == ["model", "category", "seed", "metric", "value"]
    assert len(long) == 8  # 2 models x 4 metrics
    assert "pixel AUROC" in result.output and "mean" in result.output


@pytest.mark.slow
def test_rerun_skips_finished_cells(swept):
    base, config, _ = swept
    before = (base / "results/tiny/runs/patchcore/tile/seed-42/record.json").read_text()
    result = invoke("sweep", config)
    assert result.exit_code == 0
    assert result.output.count("skip") == 2
    assert (base / "results/tiny/runs/patchcore/tile/seed-42/record.json").read_text() == before


@pytest.mark.slow
def test_table_is_rebuilt_from_records(swept):
    base, _, _ = swept
    exp = base / "results" / "tiny"
    expected = (exp / "pixel_auroc.md").read_text()
    for name in ("pixel_auroc.md", "pixel_auroc.csv", "image_auroc.md", "metrics.csv"):
        (exp / name).unlink()
    result = invoke("table", exp)
    assert result.exit_code == 0, result.output
    assert (exp / "pixel_auroc.md").read_text() == expected
    assert (exp / "image_auroc.md").is_file() and (exp / "metrics.csv").is_file()


@pytest.mark.slow
def test_test_command_reproduces_metrics_from_checkpoint(swept):
    base, _, _ = swept
    run = base / "results/tiny/runs/patchcore/tile/seed-42"
    before = json.loads((run / "record.json").read_text())
    result = invoke("test", run)
    assert result.exit_code == 0, result.output
    after = json.loads((run / "record.json").read_text())
    assert "tested_at" in after
    for metric, value in before["metrics"].items():
        assert after["metrics"][metric] == pytest.approx(value, abs=1e-6)


@pytest.mark.slow
def test_predict_on_a_folder(swept, tmp_path):
    base, _, _ = swept
    images = sorted((base / "results/tiny/data/tile/test").glob("*/*.png"))
    folder = tmp_path / "in"
    folder.mkdir()
    for image in images:
        (folder / f"{image.parent.name}_{image.name}").write_bytes(image.read_bytes())
    out = tmp_path / "out"
    result = invoke("predict", base / "results/tiny/runs/patchcore/tile/seed-42", folder, "--output", out)
    assert result.exit_code == 0, result.output
    with open(out / "scores.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(images)
    assert set(rows[0]) == {"path", "image_score", "pred_label", "overlay"}
    for row in rows:
        assert (out / row["overlay"]).stat().st_size > 0
    # A trained model scores defects above good images on average.
    good = [float(r["image_score"]) for r in rows if "good_" in r["path"]]
    bad = [float(r["image_score"]) for r in rows if "good_" not in r["path"]]
    assert sum(bad) / len(bad) > sum(good) / len(good)


def test_predict_mirrors_input_folders_so_same_named_images_keep_their_own_overlay(swept, tmp_path):
    """test/good/000.png and test/<defect>/000.png: one overlay each, and each row points at its own."""
    base, _, _ = swept
    source = base / "results/tiny/data/tile/test"
    images = sorted(source.glob("*/*.png"))
    assert len({p.name for p in images}) < len(images)  # the names do repeat across folders
    out = tmp_path / "out"
    result = invoke("predict", base / "results/tiny/runs/patchcore/tile/seed-42", source, "--output", out)
    assert result.exit_code == 0, result.output
    with open(out / "scores.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(images)
    overlays = [row["overlay"] for row in rows]
    assert len(set(overlays)) == len(images)
    for row in rows:
        rel = Path(row["path"]).relative_to(source)
        assert row["overlay"] == (rel.parent / f"{rel.stem}_anomaly.png").as_posix()
        assert (out / row["overlay"]).stat().st_size > 0


@pytest.mark.parametrize(
    "name, content", [("empty.png", b""), ("notes.png", b"<html>not found</html>"), ("notes.txt", b"hello")]
)
def test_predict_refuses_a_non_image_or_empty_file_in_one_line(swept, tmp_path, name, content):
    base, _, _ = swept
    bad = tmp_path / name
    bad.write_bytes(content)
    result = invoke("predict", base / "results/tiny/runs/patchcore/tile/seed-42", bad, "--output", tmp_path / "out")
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"adrun: error: {bad}: not a"), result.output
    assert "Traceback" not in result.output and not (tmp_path / "out" / "scores.csv").exists()


@pytest.mark.slow
def test_same_seed_same_numbers(tmp_path):
    """Running a cell twice with the same config gives identical metrics on CPU."""
    raw = tiny_raw(tmp_path / "a")
    first = invoke("sweep", write_yaml(tmp_path / "a.yaml", raw))
    raw["output"] = str(tmp_path / "b")
    second = invoke("sweep", write_yaml(tmp_path / "b.yaml", raw))
    assert first.exit_code == second.exit_code == 0
    for label in ("patchcore", "efficient_ad"):
        a = json.loads((tmp_path / f"a/tiny/runs/{label}/tile/seed-42/record.json").read_text())["metrics"]
        b = json.loads((tmp_path / f"b/tiny/runs/{label}/tile/seed-42/record.json").read_text())["metrics"]
        assert a == b and len(a) == 4, label


@pytest.mark.slow
def test_folder_format_reads_other_image_types(tmp_path):
    """format: folder takes the MVTec layout with any image type (here JPEG images, PNG masks)."""
    from PIL import Image

    from adrun import synthetic

    png = synthetic.make_dataset(
        tmp_path / "png", ["tile"], seed=3, image_size=64, n_train=6, n_test_good=3, n_test_defect=1
    )
    for path in png.rglob("*.png"):
        target = tmp_path / "jpg" / path.relative_to(png)
        target.parent.mkdir(parents=True, exist_ok=True)
        if "ground_truth" in path.parts:
            target.write_bytes(path.read_bytes())
        else:
            Image.open(path).save(target.with_suffix(".jpg"), quality=95)
    raw = tiny_raw(tmp_path / "r", format="folder", root=str(tmp_path / "jpg"))
    raw["models"] = raw["models"][:1]
    result = invoke("sweep", write_yaml(tmp_path / "c.yaml", raw))
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "r/tiny/runs/patchcore/tile/seed-42/record.json").read_text())
    assert record["status"] == "success" and record["metrics"]["pixel_AUROC"] > 0.6


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["sweep", "missing.yaml"], "adrun: error: missing.yaml: no such config file"),
        (
            ["sweep", "{cfg}", "--set", "models.0.coreset_sampling_ratoi=0.1"],
            "adrun: error: --set models.0.coreset_sampling_ratoi: unknown key; did you mean 'coreset_sampling_ratio'?",
        ),
        (
            ["sweep", "{cfg}", "--set", "data.format=mvtec", "--set", "data.root={tmp}/nowhere"],
            "adrun: error: data.root {tmp}/nowhere does not exist",
        ),
        (
            ["sweep", "{cfg}", "--set", "data.categories=[carpet]"],
            "adrun: error: data.categories: synthetic data has no category 'carpet'",
        ),
        (
            ["sweep", "{cfg}", "--set", "models.1.train_batch_size=4"],
            "adrun: error: efficient_ad: EfficientAd trains with batch size 1",
        ),
        (["test", "{tmp}"], "adrun: error: {tmp}: no record.json here"),
        (["table", "{tmp}"], "adrun: error: {tmp}: no runs/ folder"),
        (["make-data", "{tmp}/d", "--categories", "carpet"], "adrun: error: --categories: unknown 'carpet'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, expected):
    cfg = write_yaml(tmp_path / "c.yaml", tiny_raw(tmp_path / "r"))
    args = [a.format(cfg=cfg, tmp=tmp_path) for a in args]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(expected.format(cfg=cfg, tmp=tmp_path))
    assert "Traceback" not in result.output


def test_missing_category_folder_names_it(tmp_path):
    from PIL import Image

    root = tmp_path / "mvtec"
    for folder in ("train/good", "test/good", "test/crack"):
        (root / "tile" / folder).mkdir(parents=True)
        Image.new("RGB", (32, 32)).save(root / "tile" / folder / "000.png")
    (root / "tile" / "ground_truth").mkdir()  # masks, but none for crack (no ground_truth/ at all: image-level)
    raw = tiny_raw(tmp_path / "r", format="mvtec", root=str(root), categories=["tile", "wood"])
    result = runner.invoke(app, ["sweep", str(write_yaml(tmp_path / "c.yaml", raw))])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"adrun: error: category 'tile': {root}/tile/ground_truth/crack is missing; "
        "every test/<defect> needs ground_truth/<defect>/*_mask.png",
        f"adrun: error: category 'wood': folder {root}/wood is missing; categories under {root}: tile",
    ]


def test_all_categories_means_every_folder_in_layout(tmp_path):
    from adrun import synthetic
    from adrun.config import validate
    from adrun.data import prepare

    root = synthetic.make_dataset(
        tmp_path / "data", ["grid", "tile"], image_size=32, n_train=1, n_test_good=1, n_test_defect=1
    )
    (tmp_path / "data" / "notes").mkdir()  # not a category: no train/good
    experiment = validate(
        {
            "name": "x",
            "data": {"format": "mvtec", "root": str(root), "categories": "all"},
            "models": [{"name": "patchcore"}],
        }
    )
    assert prepare(experiment, tmp_path / "out") == (root, ["grid", "tile"])


def test_debug_shows_the_traceback(tmp_path):
    result = runner.invoke(app, ["--debug", "sweep", str(tmp_path / "missing.yaml")])
    assert result.exit_code != 0 and result.exit_code != 2
    assert type(result.exception).__name__ == "ConfigError"


def test_help_imports_no_heavy_library():
    """`adrun --help` must stay fast: torch, anomalib and lightning load only inside commands."""
    code = (
        "import sys; from adrun.cli import app; from typer.testing import CliRunner; "
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0; "
        "print(sorted(m for m in ('torch', 'anomalib', 'lightning', 'pandas', 'timm') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    for command in ("sweep", "train", "test", "predict", "table", "export", "make-data"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="huge pages are asked for on Linux only")
@pytest.mark.parametrize(("given", "seen"), [(None, "1"), ("0", "0")])
def test_the_cli_asks_torch_for_huge_pages_before_torch_is_imported(given, seen):
    """THP_MEM_ALLOC_ENABLE=1 unless the user set it; torch reads it once, so it must be set before torch loads."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if given is not None:
        env["THP_MEM_ALLOC_ENABLE"] = given
    code = (
        "import os, sys; import adrun.cli; assert 'torch' not in sys.modules; "
        "import torch; print(os.environ['THP_MEM_ALLOC_ENABLE'])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip() == seen


@pytest.mark.slow
def test_test_and_predict_need_no_weights_beyond_the_checkpoint(swept, tmp_path):
    """A cell trained with pretrained weights re-tests offline: the checkpoint holds the backbone."""
    import shutil

    base, _, _ = swept
    run = tmp_path / "exp/runs/patchcore/tile/seed-42"
    shutil.copytree(base / "results/tiny/runs/patchcore/tile/seed-42", run)
    record = json.loads((run / "record.json").read_text())
    record["config"]["model"]["pre_trained"] = True  # nothing is cached and HF_HUB_OFFLINE=1
    (run / "record.json").write_text(json.dumps(record))
    result = invoke("test", run)
    assert result.exit_code == 0, result.output
    after = json.loads((run / "record.json").read_text())
    assert after["metrics"]["pixel_AUROC"] == pytest.approx(record["metrics"]["pixel_AUROC"], abs=1e-6)
