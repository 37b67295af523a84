"""What a new user hits in the first hour (issue 14), and predict's outputs (issue 10), through the real CLI.

Plain output is asserted as a pipe sees it: CliRunner's stdout is not a terminal.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import CONFIGS, REPO, tiny_raw, write_yaml
from typer.testing import CliRunner

from adrun import checks, plots
from adrun.cli import app
from adrun.config import load_experiment, model_entries
from adrun.models import efficient_ad

runner = CliRunner()
WIDE = {"COLUMNS": "200"}  # rich wraps at 80 otherwise, and the asserted lines are long
ASSIGNMENT = CONFIGS / "assignment.yaml"
DURATION = r"(\d+ s|\d+ min \d\d s)"


def invoke(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env={**WIDE, **(env or {})})


def run_of(exp: Path, label: str) -> Path:
    """The run folder of ``label`` on tile, found by its record (whatever the folder layout)."""
    for path in sorted(exp.glob("runs/**/record.json")):
        record = json.loads(path.read_text())
        if record["label"] == label and record["category"] == "tile":
            return path.parent
    raise AssertionError(f"no record of {label}")


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """Three Patchcore grid cells on tile, run with the README's `--only 'patchcore/t*'`."""
    base = tmp_path_factory.mktemp("grid")
    raw = tiny_raw(base / "results")
    raw["models"] = [{**raw["models"][0], "coreset_sampling_ratio": {"grid": [0.05, 0.25, 0.5]}}]
    config = write_yaml(base / "grid.yaml", raw)
    result = invoke("sweep", config, "--only", "patchcore/t*")
    labels = [label for label, _ in model_entries(load_experiment(config))]
    return SimpleNamespace(
        base=base, config=config, raw=raw, exp=base / "results" / "tiny", result=result, labels=labels
    )


# --------------------------------------------------------------------------- --only


def test_only_picks_grid_cells_by_their_model_name(grid):
    assert grid.result.exit_code == 0, grid.result.output
    assert len(grid.labels) == 3 and all("[" in label for label in grid.labels)
    assert "tiny: 3 cells ->" in grid.result.output
    for label in grid.labels:
        record = json.loads((run_of(grid.exp, label) / "record.json").read_text())
        assert record["status"] == "success", record


def test_only_takes_a_literal_grid_label_and_tells_the_expected_duration(grid):
    label = grid.labels[1]
    before = json.loads((run_of(grid.exp, label) / "record.json").read_text())
    result = invoke("sweep", grid.config, "--only", f"{label}/tile", "--force")
    assert result.exit_code == 0, result.output
    assert "tiny: 1 cell ->" in result.output  # not "1 cells"
    assert re.search(
        rf"^expected: about {DURATION}, from the last runs of 1 cell with these settings$", result.output, re.M
    ), result.output
    assert re.search(rf"^1 cell ran in {DURATION} \(wall time\)$", result.output, re.M), result.output
    after = json.loads((run_of(grid.exp, label) / "record.json").read_text())
    assert after["started_at"] >= before["finished_at"]  # that cell, and only it, ran again
    others = [json.loads((run_of(grid.exp, x) / "record.json").read_text()) for x in grid.labels if x != label]
    assert all(r["finished_at"] <= after["started_at"] for r in others)


def test_only_matching_nothing_names_the_cells(grid, tmp_path):
    result = invoke("sweep", grid.config, "--only", "padim/*")
    assert result.exit_code == 2
    names = ", ".join(f"{label}/tile" for label in grid.labels)
    assert result.stderr.splitlines() == [f"adrun: error: --only padim/*: matches no cell; the cells are {names}"]
    raw = {**grid.raw, "output": str(tmp_path)}
    raw["models"] = [{**grid.raw["models"][0], "num_neighbors": {"grid": list(range(1, 26))}}]
    many = invoke("sweep", write_yaml(tmp_path / "many.yaml", raw), "--only", "nothing")
    assert many.exit_code == 2
    (line,) = many.stderr.splitlines()
    assert line.endswith("/tile (and 55 more)") and line.count("/tile") == 20  # 3 x 25 cells


def test_only_matching_nothing_names_each_cell_once_whatever_the_seeds(grid):
    result = invoke("sweep", grid.config, "--only", "padim/*", "--set", "seed={grid: [0, 1, 2]}")
    assert result.exit_code == 2
    names = ", ".join(f"{label}/tile" for label in grid.labels)
    assert result.stderr.splitlines() == [f"adrun: error: --only padim/*: matches no cell; the cells are {names}"]


# --------------------------------------------------------------------------- heatmap


def test_heatmap_shortens_long_grid_labels_and_names_them_in_a_legend(grid, monkeypatch):
    seen = []
    real = plots.save_png

    def capture(fig, path, dpi=120):
        if Path(path).name == "pixel_auroc.png":
            fig.canvas.draw()
            renderer = fig.canvas.get_renderer()
            ticks = [t for t in fig.axes[0].get_xticklabels() if t.get_text()]
            seen.append(
                (
                    [t.get_text() for t in ticks],
                    [t.get_window_extent(renderer) for t in ticks],
                    "\n".join(t.get_text() for t in fig.texts),
                )
            )
        real(fig, path, dpi)

    monkeypatch.setattr(plots, "save_png", capture)
    result = invoke("table", grid.exp)
    assert result.exit_code == 0, result.output
    ((names, boxes, legend),) = seen
    assert len(names) == 3
    for left, right in zip(boxes, boxes[1:], strict=False):
        assert left.x1 < right.x0, (names, boxes)  # side by side, none over its neighbour
    for name, label in zip(names, grid.labels, strict=True):
        assert f"{name}: {label}" in legend.splitlines()


# --------------------------------------------------------------------------- everything missing at once


def test_a_fresh_machine_hears_of_every_missing_item_in_one_go(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the config's ./datasets/MVTecAD does not exist here
    sweep = invoke("sweep", ASSIGNMENT, "--output", tmp_path / "out")
    doctor = invoke("doctor", ASSIGNMENT)
    assert sweep.exit_code == 2 and doctor.exit_code == 2
    lines = sweep.stderr.splitlines()
    assert len(lines) == 4, sweep.stderr
    dataset, weights, teacher, imagenette = lines
    assert dataset.startswith("adrun: error: data.root datasets/MVTecAD does not exist")
    assert "timm's pretrained weights for wide_resnet50_2.tv_in1k" in weights
    assert "EfficientAd's pretrained teacher" in teacher and "imagenet_dir datasets/imagenette" in imagenette
    assert doctor.stderr.splitlines() == lines  # the same four, as doctor knows them
    # Nothing but the sweep's lock (taken before the checks): no run folder, no record.
    assert [p.name for p in (tmp_path / "out").rglob("*") if p.is_file()] == [".adrun.lock"]


# --------------------------------------------------------------------------- doctor


def test_doctor_piped_at_80_columns_prints_every_path_whole():
    result = runner.invoke(app, ["doctor"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert f"anomalib cache (EfficientAd teachers): {efficient_ad.teacher_dir()} (none cached)" in lines
    assert f"Hugging Face cache (timm backbones): {checks.hf_cache_dir()} (none cached)" in lines
    assert "…" not in result.output and "─" not in result.output  # no cut cells, no box drawing


def test_doctor_in_an_80_column_terminal_prints_every_path_whole():
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = {**os.environ, "COLUMNS": "80", "TERM": "xterm"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "adrun.cli", "doctor"], stdin=slave, stdout=slave, stderr=slave, env=env
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert proc.wait(timeout=120) == 0
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode())
    assert str(efficient_ad.teacher_dir()) in text, text
    assert "…" not in text


# --------------------------------------------------------------------------- --set and help


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        # devices is int | str | list[int]: 1.5 fits no branch.
        ("trainer.devices=1.5", "--set trainer.devices: expected an integer or a string or a list (got 1.5)"),
        (
            "models.0.coreset_sampling_ratoi=0.1",
            "--set models.0.coreset_sampling_ratoi: unknown key; did you mean 'coreset_sampling_ratio'?",
        ),
        (
            "models.0.num_neighbors=0",
            "--set models.0.num_neighbors: Input should be greater than or equal to 1 (got 0)",
        ),
    ],
)
def test_set_errors_name_set_in_one_human_line(tmp_path, item, expected):
    config = write_yaml(tmp_path / "c.yaml", tiny_raw(tmp_path / "r"))
    result = invoke("sweep", config, "--set", item)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"adrun: error: {expected}"]


def test_a_bad_value_in_the_file_names_the_file(tmp_path):
    raw = tiny_raw(tmp_path / "r")
    raw["trainer"]["devices"] = 1.5
    config = write_yaml(tmp_path / "c.yaml", raw)
    result = invoke("sweep", config, "--set", "seed=1")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"adrun: error: {config}: trainer.devices: expected an integer or a string or a list (got 1.5)"
    ]


TYPER_NAMES = re.compile(r"<(list\[\w+\]|path|int|str|float|int range|local\|ray)>|\{[a-z_]+\}")


@pytest.mark.parametrize(
    ("command", "usage", "shown"),
    [
        ("sweep", " sweep [OPTIONS] CONFIG", ["--set KEY=VALUE", "--root PATH", "--only PATTERN", "-j, --jobs N"]),
        ("make-data", " make-data [OPTIONS] OUT", ["OUT  ", "--categories NAME", "--seed N"]),
        ("predict", " predict [OPTIONS] RUN INPUT", ["--output PATH", "--threshold X", "--batch-size N", "--masks"]),
        ("doctor", " doctor [OPTIONS] [CONFIG]", ["--set KEY=VALUE"]),
        ("status", " status [OPTIONS] RESULTS", ["--config PATH"]),
    ],
)
def test_help_names_values_plainly(command, usage, shown):
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert usage in result.output
    for text in shown:
        assert text in result.output, result.output
    assert not TYPER_NAMES.search(result.output), TYPER_NAMES.search(result.output)


# --------------------------------------------------------------------------- sample grids


@pytest.mark.parametrize("label", ["efficient_ad", "patchcore"])
def test_sample_grid_shows_the_maps_real_scale_and_says_when_the_teacher_is_random(
    reported, tmp_path, monkeypatch, label
):
    exp = tmp_path / "exp"
    shutil.copytree(reported, exp)
    run = run_of(exp, label)
    seen = {}
    real = plots.save_png

    def capture(fig, path, dpi=120):
        if Path(path).name == "samples.png":
            images = [im for ax in fig.axes for im in ax.get_images() if im.get_cmap().name == "jet"]
            maps = [im.get_array() for im in images]
            seen.update(
                title=fig._suptitle.get_text(),
                notes=[t.get_text() for t in fig.texts],
                clim={im.get_clim() for im in images},
                range=(min(float(m.min()) for m in maps), max(float(m.max()) for m in maps)),
                heads=[ax.get_title() for ax in fig.axes if ax.get_title()],
            )
        real(fig, path, dpi)

    monkeypatch.setattr(plots, "save_png", capture)
    result = invoke("test", run)
    assert result.exit_code == 0, result.output
    ((lo, hi),) = seen["clim"]  # one colour scale for every column
    if label == "efficient_ad":
        # Two steps, no validation: raw scores and maps, no threshold (the 7.03 / 1.98 / 2.20).
        assert (lo, hi) == pytest.approx(seen["range"])
        assert f"anomaly map in raw units, {lo:.3g} (blue) to {hi:.3g} (red)" in seen["title"]
        assert "0 (blue) to 1 (red)" not in seen["title"] and "no threshold" in seen["title"]
        assert not any("(anomalous)" in h or "(normal)" in h for h in seen["heads"]), seen["heads"]
        assert any("random teacher" in n for n in seen["notes"])
    else:
        assert (lo, hi) == (0.0, 1.0)
        assert "normalised scale, 0 (blue) to 1 (red); mask: map > 0.5" in seen["title"]
        assert all("(anomalous)" in h or "(normal)" in h for h in seen["heads"]), seen["heads"]
        assert not any("random teacher" in n for n in seen["notes"])


def test_docs_say_the_report_inlines_sample_grids_as_jpeg(reported):
    html = (reported / "report.html").read_text(encoding="utf-8")
    kinds = re.findall(r'<img src="data:(image/\w+);base64,[^"]*" alt="sample grid', html)
    assert kinds == ["image/jpeg", "image/jpeg"]
    docs = " ".join((REPO / "docs" / "reports.md").read_text(encoding="utf-8").split())  # lines joined
    assert "the sample grids as JPEG" in docs and "Images are inline base64 PNGs" not in docs


# --------------------------------------------------------------------------- predict


def test_predict_mirrors_the_input_folders_writes_masks_and_sums_up(reported, tmp_path):
    import numpy as np
    from PIL import Image

    run = run_of(reported, "patchcore")
    source = reported / "data" / "tile" / "test"  # good/000.png, hole/000.png, ...: the same names
    images = sorted(source.rglob("*.png"))
    assert len({p.name for p in images}) < len(images)
    out = tmp_path / "out"
    result = invoke("predict", run, source, "--output", out, "--masks", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    with open(out / "scores.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(images)
    for row in rows:
        rel = Path(row["path"]).resolve().relative_to(source.resolve())
        assert row["overlay"] == str(rel.parent / f"{rel.stem}_anomaly.png")
        assert row["mask"] == str(rel.parent / f"{rel.stem}_mask.png")
        assert (out / row["overlay"]).stat().st_size > 0
        with Image.open(out / row["mask"]) as mask, Image.open(row["path"]) as image:
            assert mask.size == image.size and set(np.unique(np.asarray(mask))) <= {0, 255}
        assert row["pred_label"] == str(float(row["image_score"]) > 0.5)
    anomalous = sum(row["pred_label"] == "True" for row in rows)
    assert 0 < anomalous < len(rows)
    assert result.output.splitlines() == [
        f"{len(rows)} images: {anomalous} anomalous (score above 0.5: the cell's own threshold)",
        f"wrote scores.csv, overlays, masks to {out}",
    ]
    everything = invoke("predict", run, source, "--output", tmp_path / "all", "--threshold=-1")
    assert everything.exit_code == 0, everything.output
    assert f"{len(rows)} images: {len(rows)} anomalous (score above -1: --threshold)" in everything.output
    assert not (tmp_path / "all" / "good" / "000_mask.png").exists()  # no --masks, no masks


@pytest.mark.parametrize("case", ["text", "zero", "corrupt", "zero in a folder", "empty folder"])
def test_predict_on_bad_input_is_one_line_and_exit_2(reported, tmp_path, case):
    run = run_of(reported, "patchcore")
    good = next((reported / "data" / "tile" / "test" / "good").glob("*.png"))
    if case == "text":
        source = tmp_path / "notes.txt"
        source.write_text("not an image")
        expected = f"{source}: not an image file"
    elif case == "zero":
        source = tmp_path / "blank.png"
        source.write_bytes(b"")
        expected = f"{source}: not a readable image (an empty file)"
    elif case == "corrupt":
        source = tmp_path / "broken.png"
        source.write_bytes(good.read_bytes()[:100])
        expected = f"{source}: not a readable image"
    elif case == "zero in a folder":
        source = tmp_path / "in"
        source.mkdir()
        shutil.copy(good, source / "a.png")
        (source / "b.png").write_bytes(b"")
        expected = f"{source / 'b.png'}: not a readable image (an empty file)"
    else:
        source = tmp_path / "empty"
        source.mkdir()
        expected = f"{source}: no images here"
    result = invoke("predict", run, source, "--output", tmp_path / "out")
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"adrun: error: {expected}"), line
    assert not (tmp_path / "out" / "scores.csv").exists()


# --------------------------------------------------------------------------- status


def test_status_lists_each_cell_with_its_state_key_seed_and_times(grid, tmp_path):
    exp = tmp_path / "results" / "tiny"
    shutil.copytree(grid.exp, exp, ignore=shutil.ignore_patterns("*.ckpt", "anomalib", "data"))
    records = {}
    for label, status in zip(grid.labels, ["success", "failed", "interrupted"], strict=True):
        path = run_of(exp, label) / "record.json"
        record = json.loads(path.read_text())
        if status != "success":
            record.update(
                status=status, error="RuntimeError: boom" if status == "failed" else "interrupted by the user"
            )
            path.write_text(json.dumps(record))
        records[label] = record
    result = invoke("status", exp, "--config", grid.config)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == (f"{exp}: 3 cells (1 done, 1 failed, 1 interrupted); keys compared with {grid.config}")
    for label, state in zip(grid.labels, ["done", "failed", "interrupted"], strict=True):
        r = records[label]
        row = rf"^{re.escape(label)}/tile\s+42\s+{state}\s+{r['key']}\s+{re.escape(r['started_at'])}\s+\d+\.\d$"
        assert any(re.match(row, line) for line in lines), (row, lines)
    assert f"  {grid.labels[1]}/tile: RuntimeError: boom" in lines

    # Other settings: every record is stale, and a new category is a cell not run yet.
    raw = {**grid.raw, "data": {**grid.raw["data"], "categories": ["tile", "grid"]}}
    raw["models"] = [{**grid.raw["models"][0], "num_neighbors": 3}]
    changed = invoke("status", exp, "--config", write_yaml(tmp_path / "changed.yaml", raw))
    assert changed.exit_code == 0, changed.output
    states = changed.output.splitlines()[0]
    assert "6 cells (3 stale, 3 not run)" in states, changed.output
    for label in grid.labels:
        assert any(
            re.match(rf"^{re.escape(label)}/grid\s+42\s+not run\s+[0-9a-f]{{16}}", line)
            for line in changed.output.splitlines()
        ), changed.output


def test_status_refuses_another_experiments_config(grid, tmp_path):
    other = write_yaml(tmp_path / "other.yaml", {**grid.raw, "name": "other"})
    result = invoke("status", grid.exp, "--config", other)
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"adrun: error: --config {other}: is experiment 'other', but {grid.exp} holds 'tiny'")
