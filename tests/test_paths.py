"""Every path adrun writes stays inside the output folder, whatever the config says (issue 10).

Grid labels are built from raw values, so a label can hold ``/`` or ``..``; the run folder
is a safe slug of it, checked to resolve inside the experiment folder before anything is
written, and the tables find every record by the same rule. Markdown tables escape the
characters that would break them, and a record's ``samples`` path never leads outside.
"""

from __future__ import annotations

import base64
import json

import pandas as pd
import pytest
import torch
from conftest import tiny_raw, write_yaml
from typer.testing import CliRunner

from adrun.cli import app

runner = CliRunner()


def resnet18_state(path):
    import timm

    torch.manual_seed(0)
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), path)
    return path


@pytest.mark.slow
def test_grid_values_with_slashes_and_dots_stay_inside_and_reach_the_table(tmp_path, monkeypatch):
    """`weights: {grid: [/abs/b.pth, ../../../../../x.pth]}`: before, one record landed levels deeper
    (missing from the table) and the other outside the output folder."""
    (tmp_path / "a").mkdir()
    absolute = resnet18_state(tmp_path / "a" / "b.pth")
    resnet18_state(tmp_path / "x.pth")
    cwd = tmp_path / "c1" / "c2" / "c3" / "c4" / "c5"  # ../../../../../x.pth from here is tmp_path/x.pth
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    out = tmp_path / "out"
    raw = tiny_raw(out)
    raw["models"] = raw["models"][:1]
    raw["models"][0].update(pre_trained=True, weights={"grid": [str(absolute), "../../../../../x.pth"]})
    config = write_yaml(tmp_path / "w.yaml", raw)
    before = {p for p in tmp_path.rglob("*")}
    result = runner.invoke(app, ["sweep", str(config)])
    assert result.exit_code == 0, result.output
    exp = out / "tiny"
    new = [p for p in tmp_path.rglob("*") if p not in before]
    outside = [p for p in new if exp not in p.parents and p not in (out, exp)]
    assert outside == []
    labels = [f"patchcore[weights={absolute}]", "patchcore[weights=../../../../../x.pth]"]
    records = sorted(exp.glob("runs/*/tile/seed-42/record.json"))  # one level per part, no deeper
    assert len(records) == 2
    by_label = {r["label"]: r for r in (json.loads(p.read_text()) for p in records)}
    assert sorted(by_label) == sorted(labels)  # the full label is kept in the record
    for label, r in by_label.items():
        assert r["status"] == "success"
        folder = r["folder"].split("/")[1]
        assert "/" not in folder and ".." not in folder and folder.startswith("patchcore_weights=")
        assert r["config"]["model"]["weights"] in label  # and the value itself
    table = pd.read_csv(exp / "pixel_auroc.csv", index_col=0)
    assert [c for c in table.columns if not c.endswith((" std", " n"))] == labels  # no success missing
    assert table.loc["tile", labels].notna().all()


def test_a_symlink_out_of_runs_is_refused_before_anything_is_written(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    exp = tmp_path / "results" / "tiny"
    (exp / "runs").mkdir(parents=True)
    (exp / "runs" / "patchcore").symlink_to(elsewhere, target_is_directory=True)
    raw = tiny_raw(tmp_path / "results")
    raw["models"] = raw["models"][:1]
    result = runner.invoke(app, ["sweep", str(write_yaml(tmp_path / "c.yaml", raw))])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "outside the experiment folder" in lines[0], result.stderr
    assert list(elsewhere.iterdir()) == []


def hand_record(folder, label, category, samples=None, pixel=0.9):
    from adrun.records import write_record

    write_record(
        folder,
        {
            "status": "success",
            "label": label,
            "model": "patchcore",
            "category": category,
            "seed": 42,
            "index": 0,
            "category_index": 0,
            "metrics": {"pixel_AUROC": pixel, "image_AUROC": pixel},
            "seconds": {"total": 1.0},
            "samples": samples,
            "config": {"experiment": "exp", "model": {"name": "patchcore"}, "data": {"format": "mvtec"}},
        },
    )


@pytest.mark.parametrize("kind", ["absolute", "relative"])
def test_a_samples_path_outside_its_run_folder_is_never_inlined(tmp_path, kind):
    from PIL import Image

    secret = tmp_path / "secret.png"
    Image.new("RGB", (8, 8), (255, 0, 0)).save(secret)
    exp = tmp_path / "exp"
    run = exp / "runs" / "patchcore" / "tile"  # the layout every adrun so far reads
    samples = str(secret) if kind == "absolute" else "../../../../secret.png"
    hand_record(run, "patchcore", "tile", samples=samples)
    result = runner.invoke(app, ["table", str(exp)])
    assert result.exit_code == 0, result.output
    html = (exp / "report.html").read_text()
    assert "lies outside the run folder; not shown" in html
    payload = base64.b64encode(secret.read_bytes()).decode()
    assert payload not in html and "data:image/jpeg" not in html


def test_markdown_tables_escape_pipes_and_angle_brackets(tmp_path):
    exp = tmp_path / "exp"
    label, category = "patchcore[weights=/w/a|b<i>.pth]", "x|y"
    hand_record(exp / "runs" / "weird" / "cat", label, category)
    result = runner.invoke(app, ["table", str(exp), "--compare", "assignment"])
    assert result.exit_code == 0, result.output
    md = (exp / "pixel_auroc.md").read_text().splitlines()
    rows = [line for line in md if line.startswith("|")]
    assert rows[0] == r"| category | patchcore[weights=/w/a\|b&lt;i&gt;.pth] |"
    assert rows[2] == r"| x\|y | 0.900 |"
    for line in rows:  # every row has exactly its two cells: no pipe of a name ends one
        assert len(line.replace("\\|", "").split("|")) == 4, line
    assert "<i>" not in "\n".join(md)
    compared = (exp / "compare_assignment.md").read_text()
    assert "<i>" not in compared and "a\\|b&lt;i&gt;" in compared
