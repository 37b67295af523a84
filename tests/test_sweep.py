"""Sweeps that lose nothing: resume after SIGKILL, SIGINT, failing cells, parallel jobs, disk full.

These drive the real CLI in subprocesses on tiny synthetic data (Patchcore, resnet18, 64 px).
"""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

import pandas as pd
import pytest
from conftest import tiny_raw, write_yaml
from sweeps import CATEGORIES, adrun, record, sweep_config, tables, wait_for
from typer.testing import CliRunner

from adrun.cli import app

pytestmark = pytest.mark.slow


def test_sigkill_then_resume_recomputes_nothing_finished(tmp_path, reference):
    config = sweep_config(tmp_path)
    exp = tmp_path / "results" / "tiny"
    proc = adrun("sweep", config)

    def first_done_second_running():
        first, second = record(exp, "tile"), record(exp, "leather")
        return first and first["status"] == "success" and second and second["status"] == "running"

    wait_for(first_done_second_running)  # polled every 50 ms; the cell takes seconds
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    finished = (exp / "runs/patchcore/tile/seed-42/record.json").read_bytes()
    mtime = (exp / "runs/patchcore/tile/seed-42/record.json").stat().st_mtime_ns
    assert record(exp, "leather")["status"] == "running"  # whole, not torn

    rerun = adrun("sweep", config)
    out, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, out
    assert "skip patchcore / tile" in out
    assert (exp / "runs/patchcore/tile/seed-42/record.json").read_bytes() == finished
    assert (exp / "runs/patchcore/tile/seed-42/record.json").stat().st_mtime_ns == mtime
    assert [record(exp, c)["status"] for c in CATEGORIES] == ["success"] * 3
    assert tables(exp) == tables(reference)


@pytest.mark.parametrize("phase", ["build", "fit"])
def test_first_sigint_records_interrupted_and_keeps_tables_valid(tmp_path, phase):
    """Ctrl-C while the cell is still importing/building, or inside Lightning's fit loop
    (which turns it into SystemExit): either way the running cell ends up interrupted."""
    config = sweep_config(tmp_path)
    exp = tmp_path / "results" / "tiny"
    log = exp / "runs/patchcore/tile/seed-42/log.txt"
    proc = adrun("sweep", config)
    if phase == "build":
        wait_for(lambda: (r := record(exp, "tile")) is not None and r["status"] == "running")
    else:  # Lightning logs the accelerator when its Trainer starts
        wait_for(lambda: log.exists() and "GPU available" in log.read_text())
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "interrupted" in out
    statuses = [(record(exp, c) or {}).get("status") for c in CATEGORIES]
    # The cell running at the signal is interrupted, the ones before it finished, none after started.
    stopped = statuses.index("interrupted")
    assert statuses[:stopped] == ["success"] * stopped and statuses[stopped + 1 :] == [None] * (2 - stopped)
    assert record(exp, CATEGORIES[stopped])["error"] == "interrupted by the user"
    table = pd.read_csv(exp / "pixel_auroc.csv", index_col=0)
    assert list(table.index) == [*CATEGORIES, "mean"]  # the plan's cells, run or not
    assert table["patchcore"].notna().sum() == stopped + (stopped > 0)  # finished cells and their mean


def test_a_failing_cell_does_not_stop_the_others_and_is_retried(tmp_path):
    exp = tmp_path / "results" / "tiny"
    # Make the data, then break one category's training images: PNGs cut short. Their
    # headers are whole, so the preflight (headers only) lets them through to the cell.
    from adrun import synthetic

    synthetic.make_dataset(exp / "data", CATEGORIES, seed=42, image_size=64, n_train=6, n_test_good=3, n_test_defect=1)
    original = {}
    for png in (exp / "data/leather/train/good").glob("*.png"):
        original[png] = png.read_bytes()
        png.write_bytes(original[png][: len(original[png]) // 2])
    # Read it as plain MVTec-layout data (a synthetic sweep would regenerate the files).
    broken = sweep_config(tmp_path, "broken.yaml", format="mvtec", root=str(exp / "data"))
    result = CliRunner().invoke(app, ["sweep", str(broken)])
    assert result.exit_code == 1, result.output
    failed = record(exp, "leather")
    assert failed["status"] == "failed"
    assert "\n" not in failed["error"] and failed["error"]
    assert "Traceback" in (exp / "runs/patchcore/leather/seed-42/log.txt").read_text()
    assert record(exp, "tile")["status"] == record(exp, "grid")["status"] == "success"
    assert "1 cell failed" in result.output and "patchcore / leather" in result.output
    table = pd.read_csv(exp / "pixel_auroc.csv", index_col=0)
    assert pd.isna(table.loc["leather", "patchcore"]) and table.loc["tile", "patchcore"] > 0.5

    for png, data in original.items():
        png.write_bytes(data)
    again = CliRunner().invoke(app, ["sweep", str(broken)])
    assert again.exit_code == 0, again.output
    assert again.output.count("skip") == 2
    assert record(exp, "leather")["status"] == "success"


def test_fail_fast_stops_at_the_first_failure(tmp_path):
    from adrun import synthetic

    root = synthetic.make_dataset(
        tmp_path / "data", CATEGORIES, seed=1, image_size=64, n_train=4, n_test_good=2, n_test_defect=1
    )
    for png in (root / "tile/train/good").glob("*.png"):
        png.write_bytes(png.read_bytes()[:100])  # a whole header, half an image: fails in the cell
    config = sweep_config(tmp_path, format="mvtec", root=str(root))
    result = CliRunner().invoke(app, ["sweep", str(config), "--fail-fast"])
    assert result.exit_code == 1
    exp = tmp_path / "results" / "tiny"
    assert record(exp, "tile")["status"] == "failed"
    assert record(exp, "leather") is None


def test_parallel_jobs_give_the_serial_tables(tmp_path, reference):
    config = sweep_config(tmp_path)
    proc = adrun("sweep", config, "--jobs", "2")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    exp = tmp_path / "results" / "tiny"
    assert tables(exp) == tables(reference)
    for category in CATEGORIES:
        assert (exp / "runs/patchcore" / category / "seed-42" / "log.txt").stat().st_size > 0


def test_only_and_force(tmp_path, reference):
    config = sweep_config(tmp_path)
    exp = tmp_path / "results" / "tiny"
    result = CliRunner().invoke(app, ["sweep", str(config), "--only", "patchcore/t*"])
    assert result.exit_code == 0, result.output
    assert record(exp, "tile")["status"] == "success" and record(exp, "leather") is None
    before = record(exp, "tile")["started_at"], (exp / "runs/patchcore/tile/seed-42/record.json").stat().st_mtime_ns
    result = CliRunner().invoke(app, ["sweep", str(config), "--only", "patchcore/tile", "--force"])
    assert result.exit_code == 0
    assert (exp / "runs/patchcore/tile/seed-42/record.json").stat().st_mtime_ns != before[1]
    nothing = CliRunner().invoke(app, ["sweep", str(config), "--only", "padim/*"])
    assert nothing.exit_code == 2 and "matches no cell" in nothing.stderr


def test_changed_key_reruns_only_that_cell(tmp_path):
    raw = tiny_raw(tmp_path / "results", categories=["tile"])
    config = write_yaml(tmp_path / "c.yaml", raw)
    exp = tmp_path / "results" / "tiny"
    first = CliRunner().invoke(app, ["sweep", str(config), "--set", "models.1.trainer.max_steps=1"])
    assert first.exit_code == 0, first.output
    patchcore = (exp / "runs/patchcore/tile/seed-42/record.json").read_bytes()
    second = CliRunner().invoke(app, ["sweep", str(config), "--set", "models.1.trainer.max_steps=2"])
    assert second.exit_code == 0
    assert "skip patchcore / tile" in second.output and "skip efficient_ad" not in second.output
    assert (exp / "runs/patchcore/tile/seed-42/record.json").read_bytes() == patchcore
    assert record(exp, "tile", "efficient_ad")["config"]["trainer"]["max_steps"] == 2


def test_output_inside_dataset_root_is_refused(tmp_path):
    from adrun import synthetic

    root = synthetic.make_dataset(tmp_path / "data", ["tile"], image_size=32, n_train=1, n_test_good=1, n_test_defect=1)
    config = sweep_config(tmp_path, format="mvtec", root=str(root), categories=["tile"])
    result = CliRunner().invoke(app, ["sweep", str(config), "--output", str(root / "results")])
    assert result.exit_code == 2
    assert "is inside the dataset root" in result.stderr


def test_disk_full_is_one_line_naming_the_cell_and_leaves_no_partial_file(tmp_path, monkeypatch):
    from adrun import records, run

    real = records.atomic_write

    def full_disk(path, write):
        if Path(path).name == "model.ckpt":

            def write_then_fail(tmp):
                write(tmp)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            return real(path, write_then_fail)
        return real(path, write)

    monkeypatch.setattr(run, "atomic_write", full_disk)
    config = sweep_config(tmp_path, categories=["tile", "grid"])
    result = CliRunner().invoke(app, ["sweep", str(config)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("adrun: error: no space left on device while running patchcore/tile;")
    folder = tmp_path / "results/tiny/runs/patchcore/tile/seed-42"
    assert sorted(p.name for p in folder.iterdir() if p.is_file()) == ["log.txt", "record.json"]
    assert record(tmp_path / "results/tiny", "tile")["status"] == "failed"
    assert record(tmp_path / "results/tiny", "grid") is None
