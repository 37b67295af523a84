"""Shared fixtures: every user directory points into tmp, nothing touches the network."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
# huggingface_hub reads HF_HUB_OFFLINE once, at import: set it before any test module imports timm.
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("home")
    for var in ("HOME", "XDG_CACHE_HOME", "TORCH_HOME", "HF_HOME"):
        monkeypatch.setenv(var, str(home / var.lower()))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # adrun's preflight probes hosts with a TCP connect; tests never do (see test_preflight).
    monkeypatch.setenv("ADRUN_OFFLINE", "1")
    monkeypatch.delenv("ADRUN_DATA_ROOT", raising=False)


def tiny_raw(output: Path, **data) -> dict:
    """The demo config shrunk: one category, small images, resnet18, a few EfficientAd steps."""
    raw = yaml.safe_load((CONFIGS / "demo.yaml").read_text())
    raw = copy.deepcopy(raw)
    raw["name"] = "tiny"
    raw["output"] = str(output)
    raw["data"]["categories"] = ["tile"]
    raw["data"]["synthetic"] = {"image_size": 64, "n_train": 6, "n_test_good": 3, "n_test_defect": 1}
    raw["data"].update(data)
    raw["models"][0].update(backbone="resnet18", image_size=64)
    raw["models"][1]["trainer"] = {"max_steps": 2}
    return raw


def run_path(exp: Path, label: str, category: str, seed: int = 42) -> Path:
    """A cell's run folder, by adrun's own naming rule (``runs/<label>/<category>/seed-<N>``)."""
    from adrun.config import cell_folder

    return Path(exp) / cell_folder(label, category, seed)


def write_yaml(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def reported(tmp_path_factory):
    """One tiny sweep (patchcore + efficient_ad on tile) for the report, samples, export and metrics tests.

    Returns the experiment folder; the sweep's terminal output is in ``../../terminal.txt``.
    Tests may add files (exports, comparisons) but must not delete the records or the sample grids.
    """
    from typer.testing import CliRunner

    from adrun.cli import app

    base = tmp_path_factory.mktemp("reported")
    config = write_yaml(base / "tiny.yaml", tiny_raw(base / "results"))
    result = CliRunner().invoke(app, ["sweep", str(config)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (base / "terminal.txt").write_text(result.output)  # what the user saw (tests/test_metrics.py)
    return base / "results" / "tiny"


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
    """The local serial sweep of tests/sweeps.py, shared by the resume, jobs and Ray tests."""
    from sweeps import reference_sweep

    return reference_sweep(tmp_path_factory.mktemp("reference"))
