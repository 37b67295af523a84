"""The field's metrics from anomalib's Evaluator, cost figures, and optional experiment tracking."""

from __future__ import annotations

import importlib.util
import json
import os
import warnings
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import tiny_raw, write_yaml
from typer.testing import CliRunner

from adrun.cli import app
from adrun.config import DEFAULT_METRICS, METRIC_NAMES, expand, validate

runner = CliRunner()
# Every metric adrun offers, AUPRO at a non-default limit so the setting provably travels.
ALL_METRICS = [{"name": "pixel_AUPRO", "fpr_limit": 0.05} if n == "pixel_AUPRO" else n for n in METRIC_NAMES]
needs_mlflow = pytest.mark.skipif(
    os.environ.get("CI", "").lower() != "true" and importlib.util.find_spec("mlflow") is None,
    reason="needs the track extra: pip install 'adrun[track]'",
)


def record_of(exp: Path, label: str = "patchcore") -> dict:
    return json.loads((exp / "runs" / label / "tile" / "seed-42" / "record.json").read_text())


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        (
            ["metrics=[image_AUROC, pixel_APRO]"],
            "metrics.1.name: unknown metric; did you mean 'pixel_AUPRO'? (got 'pixel_APRO')",
        ),
        (
            ["metrics=[{name: image_AUROC, fpr_limit: 0.2}]"],
            "metrics.0: fpr_limit applies to pixel_AUPRO only; remove it from image_AUROC",
        ),
        (
            ["metrics=[{name: pixel_AUPRO, fpr_limit: 0}]"],
            "metrics.0.fpr_limit: Input should be greater than 0 (got 0)",
        ),
        (["metrics=[{name: pixel_AUPRO, fpr_lim: 0.1}]"], "metrics.0.fpr_lim: unknown key; did you mean 'fpr_limit'?"),
        (["metrics=[pixel_AUROC, pixel_AUROC]"], "metrics: pixel_AUROC is listed twice; keep one"),
        (["metrics=[]"], "metrics: needs at least one metric, e.g. pixel_AUROC, image_AUROC, pixel_AUPRO, image_F1Max"),
        (["logger=mlfow"], "logger.name: unknown logger; did you mean 'mlflow'? (got 'mlfow')"),
        (["logger.name=wandb"], "logger.name: unknown logger; choose one of tensorboard, mlflow, csv (got 'wandb')"),
        (
            ["logger.name=csv", "logger.experiment_name=x"],
            "{cfg}: logger: experiment_name applies to the mlflow logger only; remove it",
        ),
        (
            ["logger.name=mlflow", "logger.tracking_uri=/elsewhere/mlruns"],
            "{cfg}: logger: tracking_uri must be an http(s):// server; leave it out for a file store under the "
            "experiment folder",
        ),
        (
            ["logger.name=mlflow", "logger.run=x"],
            "logger.run: unknown key; valid keys: experiment_name, name, tags, tracking_uri",
        ),
    ],
)
def test_bad_metrics_and_logger_are_one_line_and_exit_2(tmp_path, sets, expected):
    cfg = write_yaml(tmp_path / "c.yaml", tiny_raw(tmp_path / "r"))
    args = ["sweep", str(cfg)]
    for item in sets:
        args += ["--set", item]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    # The line names its origin: the --set item that wrote the key, else the file (a check
    # across keys of a section, which the file may hold too).
    line = expected.format(cfg=cfg) if expected.startswith("{cfg}") else f"--set {expected}"
    assert result.stderr.strip().splitlines() == [f"adrun: error: {line}"]
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_a_logger_that_is_not_installed_names_the_extra(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    cfg = write_yaml(tmp_path / "c.yaml", {**tiny_raw(tmp_path / "r"), "logger": "mlflow"})
    result = runner.invoke(app, ["sweep", str(cfg)])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [
        f"adrun: error: {cfg}: logger: mlflow is not installed; pip install 'adrun[track]', or remove logger: (got 'mlflow')"
    ]


def test_metric_set_is_part_of_the_key_and_the_logger_is_not():
    base = {"name": "x", "data": {"format": "synthetic"}, "models": [{"name": "patchcore"}]}

    def key(**extra):
        return expand(validate({**base, **extra}), ["tile"])[0].key

    default = key()
    assert key(metrics=list(DEFAULT_METRICS)) == default
    assert key(metrics=list(reversed(DEFAULT_METRICS))) == default  # order changes no value
    assert key(metrics=["pixel_AUROC", "image_AUROC", "image_F1Max", "pixel_AUPRO"]) == default
    # AUPRO's fpr_limit defaults to 0.3: written out or not, the same cell.
    assert (
        key(metrics=["pixel_AUROC", "image_AUROC", {"name": "pixel_AUPRO", "fpr_limit": 0.3}, "image_F1Max"]) == default
    )
    assert (
        key(metrics=["pixel_AUROC", "image_AUROC", {"name": "pixel_AUPRO", "fpr_limit": 0.05}, "image_F1Max"])
        != default
    )
    assert key(metrics=["pixel_AUROC"]) != default
    assert key(logger={"name": "csv"}) == default


@pytest.mark.slow
def test_default_metrics_settings_and_timing_in_every_record(reported):
    records = [record_of(reported, label) for label in ("patchcore", "efficient_ad")]
    for record in records:
        assert list(record["metrics"]) == list(DEFAULT_METRICS)
        for value in record["metrics"].values():
            assert isinstance(value, float) and 0.0 <= value <= 1.0
        aupro = record["metric_settings"]["pixel_AUPRO"]
        assert aupro == {
            "class": "anomalib.metrics.AUPRO",
            "fields": ["anomaly_map", "gt_mask"],
            "fpr_limit": 0.3,
            "anomalib": record["versions"]["anomalib"],
        }
        assert record["metric_settings"]["image_F1Max"]["class"] == "anomalib.metrics.F1Max"
        timing = record["timing"]
        assert timing["test_images"] == 7  # 3 good + 4 defect types x 1
        for name in ("fit_s", "test_s", "test_ms_per_image", "images_per_s", "peak_rss_mb"):
            assert timing[name] > 0, name
        # Both derive from the unrounded test time; test_s itself is rounded to the millisecond.
        assert timing["test_ms_per_image"] * 7 / 1000 == pytest.approx(timing["test_s"], abs=6e-4, rel=1e-3)
        assert 7 / timing["images_per_s"] == pytest.approx(timing["test_s"], abs=6e-4, rel=1e-3)
        assert timing["fit_s"] == record["seconds"]["fit"]
        # Peak RSS holds at least the weights and data of a live torch process, and a 2-core box has no 100 GB.
        assert 100 < timing["peak_rss_mb"] < 100_000


@pytest.mark.slow
def test_timing_table_has_one_row_per_cell(reported):
    table = pd.read_csv(reported / "timing.csv")
    assert list(table.model) == ["patchcore", "efficient_ad"] and list(table.category) == ["tile", "tile"]
    for label in ("patchcore", "efficient_ad"):
        row = table[table.model == label].iloc[0]
        timing = record_of(reported, label)["timing"]
        assert row["fit s"] == pytest.approx(timing["fit_s"])
        assert row["test ms/image"] == pytest.approx(timing["test_ms_per_image"])
        assert row["peak RSS MB"] == pytest.approx(timing["peak_rss_mb"])
    md = (reported / "timing.md").read_text().splitlines()
    assert md[0] == "| model | category | seed | fit s | test ms/image | images/s | peak RSS MB |"
    assert len(md) == 2 + 2
    assert md[2].startswith("| patchcore | tile | 42 | ")


@pytest.mark.slow
def test_no_logger_warnings_reach_the_terminal(reported):
    """EfficientAd logs its losses with self.log; with no logger Lightning warns, into log.txt only."""
    terminal = (reported.parent.parent / "terminal.txt").read_text()
    log = (reported / "runs" / "efficient_ad" / "tile" / "seed-42" / "log.txt").read_text()
    assert "but have no logger configured" in log
    assert "logger" not in terminal.lower() and "warning" not in terminal.lower()


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """A tiny Patchcore cell with every metric adrun offers and the MLflow logger, through the CLI."""
    base = tmp_path_factory.mktemp("tracked")
    raw = tiny_raw(base / "results")
    raw["models"] = raw["models"][:1]
    raw["metrics"] = ALL_METRICS
    raw["logger"] = {"name": "mlflow", "tags": {"team": "qa"}}
    config = write_yaml(base / "tiny.yaml", raw)
    result = runner.invoke(app, ["sweep", str(config)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return base / "results" / "tiny", result.output


@pytest.mark.slow
@needs_mlflow
def test_every_requested_metric_is_recorded_with_its_settings(tracked):
    exp, _ = tracked
    record = record_of(exp)
    assert list(record["metrics"]) == list(METRIC_NAMES)
    for value in record["metrics"].values():
        assert isinstance(value, float) and 0.0 <= value <= 1.0
    assert record["metric_settings"]["pixel_AUPRO"]["fpr_limit"] == 0.05
    assert record["metric_settings"]["pixel_AUPR"] == {
        "class": "anomalib.metrics.AUPR",
        "fields": ["anomaly_map", "gt_mask"],
        "anomalib": record["versions"]["anomalib"],
    }
    assert record["config"]["metrics"][METRIC_NAMES.index("pixel_AUPRO")] == {"name": "pixel_AUPRO", "fpr_limit": 0.05}
    long = pd.read_csv(exp / "metrics.csv")
    assert sorted(long.metric) == sorted(METRIC_NAMES)


@pytest.mark.slow
@needs_mlflow
def test_mlflow_run_holds_the_records_params_and_metrics(tracked):
    from mlflow.tracking import MlflowClient

    exp, terminal = tracked
    record = record_of(exp)
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=(exp / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name("tiny")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "patchcore/tile/seed42" and run.info.status == "FINISHED"
    params = run.data.params
    assert params["key"] == record["key"]
    assert params["seed"] == "42" and params["category"] == "tile"
    assert params["model/backbone"] == "resnet18" and params["model/image_size"] == "64"
    assert "pixel_AUPRO fpr_limit=0.05" in params["metrics"]
    assert run.data.tags["team"] == "qa"
    for name, value in record["metrics"].items():
        assert run.data.metrics[name] == pytest.approx(value, abs=1e-7), name
    assert run.data.metrics["timing/fit_s"] == pytest.approx(record["timing"]["fit_s"])
    assert run.data.metrics["timing/peak_rss_mb"] == pytest.approx(record["timing"]["peak_rss_mb"])
    # MLflow's own chatter ("Creating experiment") goes to the cell's log, not the terminal.
    assert "mlflow" not in terminal.lower() and "experiment with name" not in terminal.lower()


@pytest.mark.slow
@needs_mlflow
def test_retest_with_other_metrics_loads_the_checkpoint(tracked, tmp_path):
    """The checkpoint carries no evaluator state: `adrun test` computes whatever the record asks for."""
    exp, _ = tracked
    run = exp / "runs" / "patchcore" / "tile" / "seed-42"
    before = record_of(exp)
    record = json.loads((run / "record.json").read_text())
    record["config"]["metrics"] = [{"name": "pixel_AUROC"}, {"name": "pixel_AUPRO", "fpr_limit": 0.3}]
    (run / "record.json").write_text(json.dumps(record))
    try:
        result = runner.invoke(app, ["test", str(run)])
        assert result.exit_code == 0, result.output
        after = record_of(exp)
        assert list(after["metrics"]) == ["pixel_AUROC", "pixel_AUPRO"]
        assert after["metrics"]["pixel_AUROC"] == pytest.approx(before["metrics"]["pixel_AUROC"], abs=1e-6)
        # The same maps at a wider limit: a different AUPRO, the setting recorded beside it.
        assert after["metrics"]["pixel_AUPRO"] != pytest.approx(before["metrics"]["pixel_AUPRO"], abs=1e-4)
        assert after["metric_settings"]["pixel_AUPRO"]["fpr_limit"] == 0.3
    finally:
        (run / "record.json").write_text(json.dumps(before))


@pytest.mark.parametrize("name", ["tensorboard", "csv"])
def test_tensorboard_and_csv_loggers_write_under_the_experiment(tmp_path, name):
    if name == "tensorboard" and os.environ.get("CI", "").lower() != "true":
        pytest.importorskip("tensorboard", reason="needs the track extra: pip install 'adrun[track]'")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # anomalib's import-time deprecations
        from adrun import registry

    raw = yaml.safe_load(yaml.safe_dump(tiny_raw(tmp_path / "r")))
    raw["logger"] = {"name": name}
    cell = expand(validate(raw), ["tile"])[0]
    logger = registry.build_logger(cell, tmp_path / "exp")
    logger.log_metrics({"pixel_AUROC": 0.5}, step=0)
    logger.finalize("success")
    folder = tmp_path / "exp" / "logs" / name / "patchcore" / "tile-seed42"
    assert Path(logger.log_dir) == folder
    hparams = yaml.safe_load((folder / "hparams.yaml").read_text())
    assert hparams["key"] == cell.key and hparams["model"]["backbone"] == "resnet18"
    if name == "csv":
        assert pd.read_csv(folder / "metrics.csv")["pixel_AUROC"].tolist() == [0.5]
    else:
        assert any(p.name.startswith("events.out.tfevents") for p in folder.iterdir())
    assert registry.build_logger(expand(validate(tiny_raw(tmp_path / "r")), ["tile"])[0], tmp_path) is False
