"""Numbers you can trust: seeds side by side, tables that show exactly the config that was run.

Real tiny sweeps through the CLI (Patchcore, resnet18, 64 px): a seed grid, then the two
mixes a user met (a new seed and category subset after an earlier run; a new image size
and an interrupt), then deltas with a bootstrap interval between two experiments.
"""

from __future__ import annotations

import json
import shutil
import signal
import statistics

import pandas as pd
import pytest
from conftest import run_path, tiny_raw, write_yaml
from sweeps import adrun, record, sweep_config, wait_for
from typer.testing import CliRunner

from adrun.cli import app

pytestmark = pytest.mark.slow
CATEGORIES = ["tile", "leather"]
SEEDS = [0, 1]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """Patchcore on tile and leather with seeds 0 and 1: four cells, four folders, four records."""
    base = tmp_path_factory.mktemp("seeded")
    raw = tiny_raw(base / "results", categories=CATEGORIES)
    raw["models"] = raw["models"][:1]
    raw["seed"] = {"grid": SEEDS}
    config = write_yaml(base / "seeds.yaml", raw)
    result = invoke("sweep", config)
    assert result.exit_code == 0, result.output
    return config, base / "results" / "tiny"


def values(exp, metric="pixel_AUROC"):
    return {(c, s): record(exp, c, seed=s)["metrics"][metric] for c in CATEGORIES for s in SEEDS}


def test_seed_grid_gives_one_record_per_seed_and_tables_with_mean_std_and_n(seeded):
    config, exp = seeded
    again = invoke("sweep", config)  # also puts this config's plan back, whatever ran before
    assert again.exit_code == 0, again.output
    assert again.output.count("skip") == 4 and "patchcore / tile / seed 1" in again.output
    assert "pixel AUROC: tiny" in again.output and "image AUROC: tiny" in again.output  # both in the summary
    for category in CATEGORIES:
        for seed in SEEDS:
            r = record(exp, category, seed=seed)
            assert r["status"] == "success" and r["seed"] == seed
            assert r["folder"] == f"runs/patchcore/{category}/seed-{seed}"
    v = values(exp)
    assert v[("tile", 0)] != v[("tile", 1)]  # the seed reaches the model: an untrained backbone differs
    md = (exp / "pixel_auroc.md").read_text().splitlines()
    assert md[0] == "# pixel AUROC: tiny"
    assert md[2] == "| category | patchcore |"
    means = {}
    for i, category in enumerate(CATEGORIES):
        pair = [v[(category, s)] for s in SEEDS]
        means[category] = statistics.mean(pair)
        assert md[4 + i] == f"| {category} | {means[category]:.3f} ± {statistics.stdev(pair):.3f} |"
    per_seed = [statistics.mean(v[(c, s)] for c in CATEGORIES) for s in SEEDS]
    overall = statistics.mean(means.values())  # the mean row averages the per-category means
    assert md[6] == f"| **mean** | {overall:.3f} ± {statistics.stdev(per_seed):.3f} |"
    assert md[8] == (
        "Mean ± std over seeds 0, 1 (n = 2 per cell unless marked); the mean row averages the per-category means."
    )
    table = pd.read_csv(exp / "pixel_auroc.csv", index_col=0)
    assert table.loc["tile", "patchcore"] == pytest.approx(means["tile"], abs=1e-6)
    assert table.loc["tile", "patchcore std"] == pytest.approx(
        statistics.stdev([v[("tile", s)] for s in SEEDS]), abs=1e-6
    )
    assert (table["patchcore n"] == 2).all()
    long = pd.read_csv(exp / "metrics.csv")
    pixel = long[long.metric == "pixel_AUROC"]
    assert sorted(zip(pixel.category, pixel.seed, strict=True)) == sorted(v)  # every seed kept
    for stem in ("image_auroc", "image_f1max", "pixel_aupro"):  # one table per metric key
        assert (exp / f"{stem}.md").read_text().startswith(f"# {stem.split('_')[0]} ")
    html = (exp / "report.html").read_text()
    assert f"{means['tile']:.3f} ± {statistics.stdev([v[('tile', s)] for s in SEEDS]):.3f}" in html
    assert 'id="cell-patchcore-tile-seed-1"' in html


def test_heatmap_prints_the_spread_in_each_cell(seeded, tmp_path):
    from adrun import plots
    from adrun.tables import metric_table, select

    _, exp = seeded
    table = metric_table(select(exp), "pixel_AUROC")
    texts = plots.heatmap(table, tmp_path / "h.png", "pixel AUROC")
    pair = [values(exp)[("tile", s)] for s in SEEDS]
    assert texts[0] == f"{statistics.mean(pair):.3f}\n± {statistics.stdev(pair):.3f}"
    assert (tmp_path / "h.png").stat().st_size > 0


def test_per_image_scores_reproduce_the_recorded_image_metrics(seeded):
    """test_scores.csv holds what anomalib's evaluator scored: its own metrics give the record's values."""
    from adrun.against import _Metric
    from adrun.per_image import read

    _, exp = seeded
    for category in CATEGORIES:
        for seed in SEEDS:
            r = record(exp, category, seed=seed)
            scores = read(run_path(exp, "patchcore", category, seed) / r["test_scores"])
            assert len(scores) == 3 + len(set(scores.image.str.split("/").str[2])) - 1  # good + one per defect
            assert scores.image.str.startswith(f"{category}/test/").all()
            for metric in ("image_AUROC", "image_F1Max"):
                value = _Metric(metric)(scores.score.to_numpy(), scores.pred_label.to_numpy(), scores.label.to_numpy())
                assert value == r["metrics"][metric], (category, seed, metric)


def test_against_a_copy_is_no_clear_change_with_intervals(seeded, tmp_path):
    _, exp = seeded
    other = tmp_path / "results" / "tiny"
    shutil.copytree(exp, other, symlinks=True, ignore=shutil.ignore_patterns("*.ckpt", "samples.png", "data"))
    result = invoke("table", exp, "--against", other, "--resamples", "200")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(exp / "compare_against_tiny.csv")
    assert (table.delta.abs() < 1e-12).all()
    assert ((table.low <= 0) & (table.high >= 0)).all() and (table.verdict == "no clear change").all()
    image = table[table.metric == "image_AUROC"].set_index("category")
    assert (image.resampled == "seeds × test images").all()  # the per-image files were found and paired
    assert (image.a_n == 2).all() and (image.b_n == 2).all()
    assert (table[table.metric == "pixel_AUROC"].resampled == "seeds").all()
    assert "## image_AUROC: patchcore" in result.output and "| tile |" in result.output
    assert (exp / "compare_against_tiny.md").read_text().startswith("# Against `")


# --------------------------------------------------------------------------- the two mixes


def test_new_seed_on_a_category_subset_leaves_the_earlier_run_out(tmp_path, reference):
    """The issue's first mix: after a 3-category seed-42 run, `--set data.categories=[tile] --set seed=7`."""
    exp = tmp_path / "results" / "tiny"
    shutil.copytree(reference, exp, symlinks=True, ignore=shutil.ignore_patterns("*.ckpt"))
    config = sweep_config(tmp_path)
    earlier = (run_path(exp, "patchcore", "tile", 42) / "record.json").read_bytes()
    result = invoke("sweep", config, "--set", "data.categories=[tile]", "--set", "seed=7")
    assert result.exit_code == 0, result.output
    new = record(exp, "tile", seed=7)
    assert new["status"] == "success"
    assert (run_path(exp, "patchcore", "tile", 42) / "record.json").read_bytes() == earlier  # not overwritten
    assert (
        "3 records on disk left out of the tables (1 other seed, 2 other category): not cells of this "
        "config; `adrun table DIR --all` lists every record"
    ) in " ".join(result.output.split())
    md = (exp / "pixel_auroc.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| category")]
    value = f"{new['metrics']['pixel_AUROC']:.3f}"
    assert rows == [f"| tile | {value} |", f"| **mean** | {value} |"]  # no leather, no grid, no seed 42
    long = pd.read_csv(exp / "metrics.csv")
    assert set(long.seed) == {7} and set(long.category) == {"tile"}
    # `adrun table DIR` with no config uses the last sweep's plan: the same table.
    rebuilt = invoke("table", exp)
    assert rebuilt.exit_code == 0, rebuilt.output
    assert (exp / "pixel_auroc.md").read_text() == md
    everything = invoke("table", exp, "--all")
    assert everything.exit_code == 0, everything.output
    listed = pd.read_csv(exp / "all_records.csv")
    assert sorted(zip(listed.category, listed.seed, strict=True)) == [
        ("grid", 42),
        ("leather", 42),
        ("tile", 7),
        ("tile", 42),
    ]
    assert (exp / "pixel_auroc.md").read_text() == md  # --all lists, it does not change the tables


def test_new_image_size_then_an_interrupt_never_mixes_sizes(tmp_path, reference):
    """The issue's second mix: `--set models.0.image_size=...` after a 64 px run, interrupted mid-sweep."""
    exp = tmp_path / "results" / "tiny"
    shutil.copytree(reference, exp, symlinks=True, ignore=shutil.ignore_patterns("*.ckpt"))
    config = sweep_config(tmp_path)
    proc = adrun("sweep", config, "--set", "models.0.image_size=96")

    def tile_done_at_96_or_exited():
        r = record(exp, "tile")
        return (r and r["status"] == "success" and r["config"]["model"]["image_size"] == 96) or proc.poll() is not None

    wait_for(tile_done_at_96_or_exited, timeout=600)
    assert proc.poll() is None, proc.communicate()[0]
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert record(exp, "grid")["config"]["model"]["image_size"] == 64  # an earlier cell, still on disk
    result = invoke("table", exp)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(exp / "pixel_auroc.csv", index_col=0)
    tile = record(exp, "tile")["metrics"]["pixel_AUROC"]
    assert table.loc["tile", "patchcore"] == pytest.approx(tile, abs=1e-6)
    assert pd.isna(table.loc["leather", "patchcore"]) and pd.isna(table.loc["grid", "patchcore"])
    assert table.loc["mean", "patchcore"] == pytest.approx(tile, abs=1e-6)  # no 64 px cell in the mean
    assert "other settings" in result.output
    everything = invoke("table", exp, "--all")
    assert everything.exit_code == 0
    listed = pd.read_csv(exp / "all_records.csv").set_index("category")
    assert "model.image_size" in listed.columns  # the setting that differs is a column
    assert listed.loc["tile", "model.image_size"] == 96 and listed.loc["grid", "model.image_size"] == 64


# --------------------------------------------------------------------------- deltas and their noise


def hand_record(exp, label, category, seed, metrics, scores=None):
    from adrun.records import write_record

    folder = exp / "runs" / label / category / f"seed-{seed}"
    r = {
        "status": "success",
        "label": label,
        "model": "patchcore",
        "category": category,
        "seed": seed,
        "index": 0,
        "category_index": ["tile", "leather", "grid"].index(category),
        "metrics": metrics,
        "seconds": {"total": 1.0},
        "config": {"experiment": exp.name, "model": {"name": "patchcore"}, "data": {"format": "mvtec"}},
    }
    if scores is not None:
        good, bad = scores
        rows = [f"{category}/test/good/{i:03d}.png,0,{s},0" for i, s in enumerate(good)]
        rows += [f"{category}/test/crack/{i:03d}.png,1,{s},1" for i, s in enumerate(bad)]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "test_scores.csv").write_text("image,label,score,pred_label\n" + "\n".join(rows) + "\n")
        r["test_scores"] = "test_scores.csv"
    write_record(folder, r)


def test_compare_marks_each_delta_within_or_outside_the_seed_spread(tmp_path):
    exp = tmp_path / "exp"
    for seed, (tile, grid) in enumerate([(0.94, 0.90), (0.95, 0.91), (0.96, 0.92)]):
        hand_record(exp, "pc", "tile", seed, {"pixel_AUROC": tile})
        hand_record(exp, "pc", "grid", seed, {"pixel_AUROC": grid})
    hand_record(exp, "pc", "leather", 0, {"pixel_AUROC": 0.985})
    result = invoke("table", exp, "--compare", "assignment")
    assert result.exit_code == 0, result.output
    assert "| tile | 0.950 ± 0.010 | 0.948 | +0.002 (within) |" in result.output  # |Δ| <= 2 std
    assert "| grid | 0.910 ± 0.010 | 0.980 | -0.070 (outside) |" in result.output
    assert "| leather | 0.985 | 0.990 | -0.005 |" in result.output  # one seed: no spread to judge by
    csv = pd.read_csv(exp / "compare_assignment.csv", keep_default_na=False).set_index("category")
    assert csv.loc["tile", "spread"] == "within" and csv.loc["grid", "spread"] == "outside"
    assert csv.loc["leather", "spread"] == "" and csv.loc["tile", "n"] == 3


def test_against_says_better_worse_or_no_interval(tmp_path):
    a, b = tmp_path / "new" / "exp", tmp_path / "old" / "exp"
    perfect = ([0.1, 0.2, 0.3, 0.4], [0.6, 0.7, 0.8, 0.9])  # image AUROC 1.0
    mixed = ([0.5, 0.6, 0.7, 0.8], [0.1, 0.2, 0.3, 0.9])  # image AUROC 4/16 = 0.25; a resample rarely reaches 1
    for seed, (pa, pb) in enumerate([(0.90, 0.80), (0.92, 0.81)]):
        hand_record(a, "pc", "tile", seed, {"image_AUROC": 1.0, "pixel_AUROC": pa}, perfect)
        hand_record(b, "pc", "tile", seed, {"image_AUROC": 0.25, "pixel_AUROC": pb}, mixed)
    hand_record(a, "pc", "grid", 0, {"image_AUROC": 1.0, "pixel_AUROC": 0.95}, perfect)
    hand_record(b, "pc", "grid", 0, {"image_AUROC": 0.25, "pixel_AUROC": 0.94}, mixed)
    result = invoke("table", a, "--against", b, "--resamples", "300")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(a / "compare_against_exp.csv", keep_default_na=False)  # an empty verdict stays ""
    for column in ("delta", "low", "high"):  # an empty interval leaves these text columns
        table[column] = pd.to_numeric(table[column], errors="coerce")
    rows = table.set_index(["metric", "category"])
    tile = rows.loc[("image_AUROC", "tile")]
    assert tile.delta == pytest.approx(0.75) and 0 < tile.low <= tile.delta <= tile.high
    assert tile.verdict == "better" and tile.resampled == "seeds × test images"
    pixel = rows.loc[("pixel_AUROC", "tile")]
    assert pixel.delta == pytest.approx(0.105) and pixel.verdict == "better" and pixel.resampled == "seeds"
    assert 0.09 - 1e-9 <= pixel.low <= pixel.high <= 0.12 + 1e-9  # A's and B's seed means, resampled
    grid = rows.loc[("pixel_AUROC", "grid")]
    assert grid.verdict == "" and grid.note == "one seed on each side: no interval (run several seeds)"
    assert rows.loc[("image_AUROC", "grid")].verdict == "better"  # one seed, but the test images resample
    assert "| tile | 1.000 (n=2) | 0.250 (n=2) | +0.750 |" in result.output
    assert "pixel metrics resample the seeds only" in result.output
    back = invoke("table", b, "--against", a, "--resamples", "300")
    assert back.exit_code == 0, back.output
    reverse = pd.read_csv(b / "compare_against_exp.csv").set_index(["metric", "category"])
    assert reverse.loc[("image_AUROC", "tile")].verdict == "worse"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--against", "{a}"], "adrun: error: --against {a}: the same experiment as {a}; pass the experiment"),
        (["--against", "{tmp}/nowhere"], "adrun: error: --against {tmp}/nowhere: no runs/ folder"),
    ],
)
def test_against_bad_input_is_one_line(tmp_path, args, expected):
    a = tmp_path / "exp"
    hand_record(a, "pc", "tile", 0, {"pixel_AUROC": 0.9})
    result = invoke("table", a, *[x.format(a=a, tmp=tmp_path) for x in args])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[0].startswith(expected.format(a=a, tmp=tmp_path))
    assert len(result.stderr.strip().splitlines()) == 1


def test_readme_block_drops_the_title_and_keeps_the_table(seeded):
    import importlib.util

    from conftest import REPO

    _, exp = seeded
    spec = importlib.util.spec_from_file_location("readme_table", REPO / "scripts" / "readme_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    block = module.table_block(exp)
    assert block.startswith("| category | patchcore |\n|---|---:|\n| tile | ")
    assert "Mean ± std over seeds 0, 1" in block and "cells, " in block
    # The demo's block carries no timing: the README quotes the sweep's own wall time instead.
    quiet = module.table_block(exp, timing=False)
    assert quiet.startswith("| category | patchcore |\n") and "Mean ± std over seeds 0, 1" in quiet
    assert "fit + test" not in quiet and "(anomalib " in quiet


def test_test_command_on_a_seed_folder_refreshes_its_scores(seeded):
    _, exp = seeded
    run = run_path(exp, "patchcore", "leather", 1)
    before = json.loads((run / "record.json").read_text())
    (run / "test_scores.csv").unlink()
    result = invoke("test", run)
    assert result.exit_code == 0, result.output
    after = json.loads((run / "record.json").read_text())
    assert after["metrics"] == pytest.approx(before["metrics"], abs=1e-6)
    assert after["folder"] == "runs/patchcore/leather/seed-1" and (run / "test_scores.csv").is_file()
    assert (exp / "pixel_auroc.md").is_file()
