"""Nothing of the user's is lost, run or silently changed (issue 10), through the real CLI.

Checkpoints are never unpickled; a real-looking dataset is never overwritten; inputs that
would change results without a word stop the sweep before its first cell, one line each;
bad paths and odd names are one line, not a traceback; one sweep per experiment folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_raw, write_yaml
from PIL import Image
from sweeps import adrun, record, sweep_config, wait_for
from typer.testing import CliRunner

from adrun.cli import app

runner = CliRunner()


def invoke(*args, **kwargs):
    return runner.invoke(app, [str(a) for a in args], **kwargs)


def one_error_line(result) -> str:
    """The single ``adrun: error:`` line a failed command printed; no traceback."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("adrun: error: ") and "Traceback" not in result.output
    return lines[0].removeprefix("adrun: error: ")


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` by relative path, with its sha256."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# --------------------------------------------------------------------------- checkpoints


class Payload:
    """Pickles as a call to os.system: what a crafted model.ckpt carries."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture()
def planted(reported, tmp_path):
    """A copy of a trained run whose model.ckpt is the real checkpoint plus a live payload."""
    run = tmp_path / "exp" / "runs" / "patchcore" / "tile" / "seed-42"
    shutil.copytree(reported / "runs" / "patchcore" / "tile" / "seed-42", run, ignore=shutil.ignore_patterns("export*"))
    marker = tmp_path / "PWNED"
    state = torch.load(run / "model.ckpt", map_location="cpu", weights_only=False)  # our own file
    state["hyper_parameters"]["note"] = Payload(marker)
    torch.save(state, run / "model.ckpt")
    return run, marker


COMMANDS = {
    "export": lambda run, tmp: ["export", run, "--format", "torch", "--output", tmp / "out"],
    "test": lambda run, tmp: ["test", run],
    "predict": lambda run, tmp: [
        "predict",
        run,
        Path(json.loads((run / "record.json").read_text())["data_root"]) / "tile" / "test" / "good",
        "--output",
        tmp / "out",
    ],
}


@pytest.mark.slow
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_crafted_checkpoint_runs_nothing_and_is_one_line(planted, tmp_path, command):
    run, marker = planted
    line = one_error_line(invoke(*COMMANDS[command](run, tmp_path)))
    assert line.startswith(f"{run / 'model.ckpt'}: refused: it asks for posix.system, and adrun never unpickles")
    assert not marker.exists()
    assert not (tmp_path / "out").exists()  # refused before anything was written
    # The payload is live: a plain unpickling runs it. That is what adrun must never do.
    torch.load(run / "model.ckpt", map_location="cpu", weights_only=False)
    assert marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_truncated_checkpoint_is_one_line(reported, tmp_path, command):
    run = tmp_path / "exp" / "runs" / "patchcore" / "tile" / "seed-42"
    shutil.copytree(reported / "runs" / "patchcore" / "tile" / "seed-42", run, ignore=shutil.ignore_patterns("export*"))
    whole = (run / "model.ckpt").read_bytes()
    (run / "model.ckpt").write_bytes(whole[: len(whole) // 2])
    line = one_error_line(invoke(*COMMANDS[command](run, tmp_path)))
    assert line.startswith(f"{run / 'model.ckpt'}: truncated or corrupt (")
    assert line.endswith("rerun the cell to write a new one (adrun sweep CONFIG --force --only LABEL/CATEGORY)")


# --------------------------------------------------------------------------- user datasets


def fake_mvtec(root: Path) -> Path:
    """A 'real' MVTec AD category: PNGs named as MVTec names them, more than the generator writes."""
    rng = np.random.default_rng(0)

    def png(path: Path, mode: str = "RGB") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        shape = (40, 40, 3) if mode == "RGB" else (40, 40)
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(path)

    for i in range(30):  # the generator writes 16 by default and prunes numbered files past its count
        png(root / "tile" / "train" / "good" / f"{i:03d}.png")
    for i in range(3):
        png(root / "tile" / "test" / "good" / f"{i:03d}.png")
        png(root / "tile" / "test" / "scratch" / f"{i:03d}.png")
        png(root / "tile" / "ground_truth" / "scratch" / f"{i:03d}_mask.png", "L")
    (root / "license.txt").write_text("the only copy\n")
    return root


@pytest.mark.parametrize("how", ["--root", "ADRUN_DATA_ROOT", "make-data"])
def test_the_generator_never_writes_over_a_real_dataset(tmp_path, how):
    root = fake_mvtec(tmp_path / "mvtec")
    before = tree(root)
    config = write_yaml(tmp_path / "c.yaml", tiny_raw(tmp_path / "results"))  # data.format: synthetic
    if how == "--root":
        result = invoke("sweep", config, "--root", root)
    elif how == "ADRUN_DATA_ROOT":
        result = invoke("sweep", config, env={"ADRUN_DATA_ROOT": str(root)})
    else:
        result = invoke("make-data", root)
    line = one_error_line(result)
    assert line.startswith(
        f"{root} holds files adrun did not write (it has no .adrun-synthetic); the synthetic "
        "generator writes only into a new or empty folder, never over a real dataset"
    )
    assert tree(root) == before  # byte for byte, nothing added, nothing removed
    assert not (tmp_path / "results" / "tiny" / "runs").exists()


def test_the_generator_rewrites_only_its_own_folder(tmp_path):
    out = tmp_path / "made"
    first = invoke("make-data", out, "--categories", "tile", "--image-size", "32", "--n-train", "3")
    assert first.exit_code == 0, first.output
    assert (out / ".adrun-synthetic").is_file()
    again = invoke("make-data", out, "--categories", "tile", "--image-size", "32", "--n-train", "2")
    assert again.exit_code == 0, again.output  # marked as adrun's: rewritten, the third image pruned
    assert sorted(p.name for p in (out / "tile/train/good").iterdir()) == ["000.png", "001.png"]
    assert invoke("make-data", tmp_path / "file.txt").exit_code == 0  # a new folder of that name
    (tmp_path / "plain").write_text("x")
    assert one_error_line(invoke("make-data", tmp_path / "plain")).startswith(f"{tmp_path / 'plain'} is a file")


# --------------------------------------------------------------------------- inputs that change results


@pytest.fixture()
def mvtec(tmp_path):
    """A small, valid MVTec-layout category made by the generator; each test breaks one thing."""
    from adrun import synthetic

    root = synthetic.make_dataset(tmp_path / "data", ["tile"], image_size=32, n_train=5, n_test_good=2, n_test_defect=2)
    config = sweep_config(tmp_path, format="mvtec", root=str(root), categories=["tile"])
    return root / "tile", config


def sixteen_bit(path: Path) -> None:
    grey = np.asarray(Image.open(path).convert("L"), dtype=np.uint16) * 257
    Image.fromarray(grey).save(path)  # uint16: PIL writes a 16-bit grey PNG
    assert Image.open(path).mode == "I;16"


BREAKS = {
    "mask missing": (
        lambda t: (t / "ground_truth/hole/001_mask.png").unlink(),
        "{t}/test/hole/001.png has no mask (expected ground_truth/<defect>/001_mask.png); "
        "name each mask <image>_mask.png, as MVTec AD does",
    ),
    "mask misnamed": (
        lambda t: (t / "ground_truth/hole/001_mask.png").rename(t / "ground_truth/hole/1_mask.png"),
        "{t}/test/hole/001.png has no mask (expected ground_truth/<defect>/001_mask.png); "
        "{t}/ground_truth/hole/1_mask.png matches no image; name each mask <image>_mask.png",
    ),
    "mask size": (
        lambda t: Image.new("L", (16, 16)).save(t / "ground_truth/stain/000_mask.png"),
        "mask {t}/ground_truth/stain/000_mask.png is 16x16 but its image 000.png is 32x32; "
        "every mask must have its image's size",
    ),
    "16-bit": (
        lambda t: sixteen_bit(t / "train/good/003.png"),
        "{t}/train/good/003.png is a 16-bit image (PIL mode I;16), which anomalib reads as all white; "
        "convert the images to 8 bits per channel",
    ),
    "not an image": (
        lambda t: (t / "test/good/001.png").write_bytes(b"<html>not found</html>"),
        "{t}/test/good/001.png is not a readable image (cannot identify image file",
    ),
    "empty test/good": (
        lambda t: [p.unlink() for p in (t / "test/good").iterdir()],
        "{t}/test/good has no images; anomalib would then quietly move 20% of train/good into the "
        "test set: add good test images there, or set data.test_good_from_train: true",
    ),
    "jpeg": (
        lambda t: Image.open(t / "train/good/000.png").save(t / "train/good/100.jpg"),
        "{t}/train/good/100.jpg is a JPEG, and format mvtec reads .png only (as anomalib's MVTecAD does), "
        "so it is left out; set data.format: folder to read it",
    ),
}


@pytest.mark.parametrize("case", list(BREAKS))
def test_an_input_that_would_change_results_stops_the_sweep_first(mvtec, case):
    category, config = mvtec
    breaks, expected = BREAKS[case]
    breaks(category)
    start = time.perf_counter()
    line = one_error_line(invoke("sweep", config))
    assert time.perf_counter() - start < 30
    assert line.startswith("category 'tile': " + expected.format(t=category)), line
    assert not (config.parent / "results" / "tiny" / "runs").exists()  # before the first cell


def test_a_truncated_image_passes_the_header_check_and_fails_verify_images(mvtec):
    category, config = mvtec
    png = category / "train/good/002.png"
    png.write_bytes(png.read_bytes()[:100])  # whole header, half the pixels
    # Headers only: the data checks pass (the sweep goes on to --only, which matches nothing).
    assert "matches no cell" in one_error_line(invoke("sweep", config, "--only", "none/*"))
    line = one_error_line(invoke("sweep", config, "--only", "none/*", "--verify-images"))
    assert line == f"category 'tile': {png} is not a readable image (image file is truncated); replace or remove it"


@pytest.mark.slow
def test_empty_test_good_runs_only_when_asked_and_the_record_says_so(mvtec):
    category, config = mvtec
    for p in (category / "test/good").iterdir():
        p.unlink()
    result = invoke("sweep", config, "--set", "data.test_good_from_train=true")
    assert result.exit_code == 0, result.output
    assert "data.test_good_from_train: true" in result.output
    done = record(config.parent / "results" / "tiny", "tile")
    assert done["status"] == "success" and done["config"]["data"]["test_good_from_train"] is True


def test_a_duplicate_yaml_key_names_its_line(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        "name: x\nseed: 1\nmodels:\n  - name: patchcore\n    backbone: resnet18\n"
        "    layers: [layer2]\n    backbone: wide_resnet50_2\n"
    )
    assert one_error_line(invoke("sweep", config)) == (
        f"{config}: key 'backbone' appears twice in one mapping (first at line 5) at line 7; keep one of them"
    )


def test_a_huge_grid_is_counted_not_expanded(tmp_path):
    raw = tiny_raw(tmp_path / "results")
    # Five keys x ten valid values each: 100,000 models, each a valid entry on its own.
    grids = {"num_neighbors": 1, "image_size": 32, "center_crop": 32, "train_batch_size": 1, "eval_batch_size": 1}
    raw["models"] = [
        {
            "name": "patchcore",
            "backbone": "resnet18",
            "pre_trained": False,
            **{key: {"grid": list(range(first, first + 10))} for key, first in grids.items()},
        }
    ]
    start = time.perf_counter()
    line = one_error_line(invoke("sweep", write_yaml(tmp_path / "c.yaml", raw)))
    assert time.perf_counter() - start < 10
    assert line.endswith(
        "models.0: its grids expand to 100,000 cells, more than adrun runs in one sweep (10,000); "
        "use fewer grid values, or split the sweep into several configs"
    )


@pytest.mark.slow
def test_a_dataset_gone_mid_sweep_fails_its_cell_and_downloads_nothing(tmp_path):
    from adrun import synthetic

    root = synthetic.make_dataset(
        tmp_path / "data", ["tile", "grid"], image_size=32, n_train=3, n_test_good=1, n_test_defect=1
    )
    config = sweep_config(tmp_path, format="mvtec", root=str(root), categories=["tile", "grid"])
    exp = tmp_path / "results" / "tiny"
    proc = adrun("sweep", config)
    wait_for(lambda: (record(exp, "tile") or {}).get("status") == "running")
    shutil.move(root / "grid", tmp_path / "moved-away")  # unmounted, deleted, moved: gone
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 1, out
    assert record(exp, "tile")["status"] == "success"
    failed = record(exp, "grid")
    assert failed["status"] == "failed"
    assert failed["error"] == (
        f"DatasetMissing: {root / 'grid'} is gone (moved, deleted or unmounted since the sweep began); restore it "
        "and run the same command again to resume (adrun downloads MVTec AD only through `adrun fetch`)"
    )
    assert sorted(p.name for p in root.iterdir()) == [".adrun-synthetic", "tile"]  # no download began


# --------------------------------------------------------------------------- one line, never a traceback


def test_a_config_that_is_not_utf8(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_bytes("name: caf\u00e9\nmodels: [{name: patchcore}]\n".encode("latin-1"))
    assert one_error_line(invoke("sweep", config)) == (
        f"{config}: not UTF-8 text (byte 0xe9 at line 1); save the file as UTF-8"
    )


def test_an_output_path_that_is_a_file(tmp_path):
    config = write_yaml(tmp_path / "c.yaml", tiny_raw(tmp_path / "results"))
    (tmp_path / "taken").write_text("a file")
    for output in (tmp_path / "taken", tmp_path / "taken" / "sub"):
        line = one_error_line(invoke("sweep", config, "--output", output))
        assert line.startswith(f"output {output}/tiny: {tmp_path / 'taken'} is a file, not a folder; set output:")
    assert (tmp_path / "taken").read_text() == "a file"


def test_an_output_path_that_cannot_be_written(tmp_path):
    if os.geteuid() == 0:
        target = Path("/sys/adrun-test-output")  # sysfs: even root may not make folders there
        if target.exists() or os.access("/sys", os.W_OK) and not _mkdir_fails(target):
            pytest.skip("no folder here that this user cannot write")
    else:
        locked = tmp_path / "ro"
        locked.mkdir()
        locked.chmod(0o555)
        target = locked / "out"
    config = write_yaml(tmp_path / "c.yaml", tiny_raw(tmp_path / "results"))
    line = one_error_line(invoke("sweep", config, "--output", target))
    assert line.startswith(f"output {target}/tiny: cannot write there (")
    assert line.endswith("); set output: (or --output) to a folder you can write")


def _mkdir_fails(path: Path) -> bool:
    try:
        path.mkdir()
    except OSError:
        return True
    path.rmdir()
    return False


@pytest.mark.parametrize("args", [["--n-train", "0"], ["--image-size", "-5"], ["--image-size", "8"], ["--seed", "-1"]])
def test_make_data_with_a_size_below_its_least(tmp_path, args):
    line = one_error_line(invoke("make-data", tmp_path / "d", *args))
    assert line.startswith(f"{args[0]} {args[1]}: must be at least ")
    assert not (tmp_path / "d").exists()


@pytest.mark.slow
def test_markup_and_mathtext_characters_in_folder_names(tmp_path):
    """`[`, `$` and `\\` in a category and a defect name: printed and drawn as written."""
    from adrun import synthetic

    made = synthetic.make_dataset(tmp_path / "made", ["tile"], image_size=32, n_train=3, n_test_good=1, n_test_defect=1)
    # Rich would print "c[red]q" as "cq" (markup); "$\q$" is a mathtext error in matplotlib.
    category, defect = "c[red]$\\q$", "hole$\\x$[bold]"
    root = tmp_path / "data"
    shutil.copytree(made / "tile", root / category)
    for split in ("test", "ground_truth"):
        shutil.rmtree(root / category / split / "hole")
        (root / category / split / "scratch").rename(root / category / split / defect)
    config = sweep_config(tmp_path, format="mvtec", root=str(root), categories="all")
    result = invoke("sweep", config, "--set", "models.0.num_neighbors=1", env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert f"ok   patchcore / {category}: pixel_AUROC" in result.output
    exp = tmp_path / "results" / "tiny"
    assert record(exp, category)["samples"] == "samples.png"  # the grid, titled with the defect, was drawn
    assert (exp / "pixel_auroc.png").stat().st_size > 0


def test_a_failed_record_never_shows_an_earlier_runs_error(tmp_path, monkeypatch):
    """The first record write fails (an I/O error): the summary shows that, not what record.json held."""
    import errno

    from adrun import records
    from adrun.config import load_experiment
    from adrun.sweep import plan

    config = sweep_config(tmp_path, categories=["tile"])
    (cell,) = plan(load_experiment(config)).cells
    folder = tmp_path / "results" / "tiny" / "runs" / "patchcore" / "tile" / "seed-42"
    folder.mkdir(parents=True)
    (folder / "record.json").write_text(
        json.dumps(
            {
                "status": "failed",
                "label": "patchcore",
                "category": "tile",
                "key": cell.key,
                "index": 0,
                "error": "ValueError: an earlier run's error",
            }
        )
    )
    real = records.atomic_write_text

    def broken_once(path, text):
        if Path(path).name == "record.json" and not getattr(broken_once, "done", False):
            broken_once.done = True
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real(path, text)

    monkeypatch.setattr(records, "atomic_write_text", broken_once)
    result = invoke("sweep", config)
    assert result.exit_code == 1, result.output
    assert "an earlier run's error" not in result.output
    assert "FAIL patchcore / tile: OSError: [Errno 5] Input/output error" in result.output


@pytest.mark.slow
def test_a_worker_that_dies_before_its_record_is_not_an_earlier_failure(tmp_path, monkeypatch):
    """--jobs: the worker dies at `import torch` (as if killed), before it writes any record."""
    from adrun.config import load_experiment
    from adrun.sweep import plan

    config = sweep_config(tmp_path, categories=["tile"])
    (cell,) = plan(load_experiment(config)).cells
    folder = tmp_path / "results" / "tiny" / "runs" / "patchcore" / "tile" / "seed-42"
    folder.mkdir(parents=True)
    earlier = {
        "status": "failed",
        "label": "patchcore",
        "category": "tile",
        "key": cell.key,
        "index": 0,
        "error": "ValueError: an earlier run's error",
    }
    (folder / "record.json").write_text(json.dumps(earlier))
    fake = tmp_path / "fake"
    (fake / "torch").mkdir(parents=True)
    (fake / "torch" / "__init__.py").write_text("raise SystemExit(3)\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(fake), *filter(None, [os.environ.get("PYTHONPATH")])]))
    result = invoke("sweep", config, "--jobs", "2")
    assert result.exit_code == 1, result.output
    assert "an earlier run's error" not in result.output
    assert "FAIL patchcore / tile: worker process exited with code 3 before the cell began" in result.output
    assert record(tmp_path / "results" / "tiny", "tile")["error"] == (
        "worker process exited with code 3 before the cell began"
    )


# --------------------------------------------------------------------------- one sweep per folder


@pytest.mark.slow
def test_a_second_sweep_on_the_same_folder_refuses_naming_the_first(tmp_path):
    config = sweep_config(tmp_path)  # three categories
    exp = tmp_path / "results" / "tiny"
    first = adrun("sweep", config, "--jobs", "2")  # its workers run under its lock
    wait_for(lambda: (exp / ".adrun.lock").is_file() and f"pid {first.pid} " in (exp / ".adrun.lock").read_text())
    second = subprocess.run(
        [sys.executable, "-m", "adrun.cli", "sweep", str(config)], capture_output=True, text=True, timeout=120
    )
    assert second.returncode == 2, second.stdout + second.stderr
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert lines[0].startswith(f"adrun: error: {exp}: another adrun sweep (pid {first.pid} on ")
    assert lines[0].endswith(
        "is running on this experiment folder; wait for it to finish, or pass --wait to start when it does"
    )
    waiting = adrun("sweep", config, "--wait")
    out, _ = first.communicate(timeout=600)
    assert first.returncode == 0, out
    assert out.count(" ok ") == 3  # the refused sweep ran nothing, so nothing was run twice
    late, _ = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, late
    assert "waiting for the other sweep on this experiment folder (pid" in late
    assert late.count("skip") == 3  # it started once the first was done, and found its cells finished
