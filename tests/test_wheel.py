"""The wheel users install: built from the tracked files, installed into a fresh venv, run from there.

The fresh venv borrows this venv's third-party packages through a plain path in a .pth
file (a path, not a site dir, so the editable adrun of this checkout stays invisible):
what runs is the wheel's own adrun with the wheel's own example configs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest
import yaml
from conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    src = tmp / "src"
    for name in filter(None, tracked.decode().split("\0")):
        origin = REPO / name
        if origin.is_symlink() or origin.is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            if origin.is_symlink():
                os.symlink(os.readlink(origin), src / name)
            else:
                shutil.copy2(origin, src / name)
    # No build isolation: the registry may be unreachable; this venv has setuptools.
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp / "dist"), str(src)],
        check=True,
        capture_output=True,
    )
    (built,) = (tmp / "dist").glob("adrun-*.whl")
    return built


def test_wheel_ships_the_example_configs_and_references(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {n.removeprefix("adrun/configs/") for n in names if n.startswith("adrun/configs/")}
    assert shipped == {p.name for p in (REPO / "configs").glob("*.yaml")}
    assert {"adrun/references/assignment.csv", "adrun/references/anomalib.csv"} <= set(names)


def test_wheel_runs_help_and_a_smoke_cell_from_its_own_config(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    adrun = env_dir / "bin" / "adrun"
    helped = subprocess.run([adrun, "--help"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "Run every model x category cell of a config." in helped.stdout

    where = subprocess.run(
        [
            python,
            "-c",
            "import adrun, importlib.resources as r; print(adrun.__file__); "
            "print(r.files('adrun') / 'configs' / 'demo.yaml')",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=True,
    ).stdout.split()
    assert where[0].startswith(site), where  # the wheel's adrun, not this checkout's
    demo = Path(where[1])
    raw = yaml.safe_load(demo.read_text())
    raw["output"] = str(tmp_path / "results")
    raw["data"]["categories"] = ["tile"]
    raw["data"]["synthetic"] = {"image_size": 64, "n_train": 6, "n_test_good": 2, "n_test_defect": 1}
    raw["models"] = [{**raw["models"][0], "backbone": "resnet18", "image_size": 64}]
    config = tmp_path / "demo.yaml"
    config.write_text(yaml.safe_dump(raw))
    ran = subprocess.run(
        [adrun, "sweep", str(config), "--smoke"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    table = (tmp_path / "results" / "smoke" / raw["name"] / "pixel_auroc.csv").read_text().splitlines()
    assert table[0] == "category,patchcore,patchcore std,patchcore n" and table[1].startswith("tile,0.")
    assert table[1].endswith(",,1")  # one seed: no std, n = 1
