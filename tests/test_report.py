"""report.html, sample grids and the heatmap of a real tiny sweep, and the page in a real browser.

The browser test drives Debian's headless Chromium over the DevTools protocol: it loads
the report from disk, collects console messages and exceptions, and reads the DOM
(tables, images and whether each image decoded). Chromium is installed with apt when
missing and we are root; only where it truly cannot be had is the test skipped, and
never in CI (``CI=true``).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def test_every_tested_cell_has_a_sample_grid(reported):
    from PIL import Image

    from adrun.records import read_records

    records = read_records(reported)
    assert [r["label"] for r in records] == ["patchcore", "efficient_ad"]
    for r in records:
        assert r["samples"] == "samples.png" and r["samples_error"] is None
        assert r["seconds"]["samples"] > 0
        with Image.open(reported / r["folder"] / "samples.png") as grid:
            # One column per image: N_GOOD good + one per defect type of the synthetic data.
            assert grid.width > grid.height > 400


def test_samples_pick_is_fixed_and_covers_every_defect():
    import pandas as pd

    from adrun.samples import pick

    rows = [("good", i) for i in range(4)] + [(d, i) for d in ("stain", "hole") for i in range(3)]
    frame = pd.DataFrame(
        {
            "image_path": [f"/d/test/{kind}/{i:03d}.png" for kind, i in rows],
            "label_index": [0 if kind == "good" else 1 for kind, _ in rows],
            "mask_path": ["" if kind == "good" else f"/d/ground_truth/{kind}/{i:03d}_mask.png" for kind, i in rows],
        }
    )
    picked = pick(frame.sample(frac=1.0, random_state=0))  # input order does not matter
    assert picked.image_path.tolist() == [
        "/d/test/good/000.png",
        "/d/test/good/001.png",
        "/d/test/hole/000.png",
        "/d/test/stain/000.png",
    ]


def _batch(paths, scores, maps=True):
    import torch

    return SimpleNamespace(
        image_path=list(paths),
        pred_score=torch.tensor(scores),
        anomaly_map=torch.stack([torch.full((1, 4, 4), v) for v in scores]) if maps else None,
    )


class Rows:
    """A test dataset of paths: what the grid's own predict pass loads."""

    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        return self.samples.image_path.iloc[index]

    @staticmethod
    def collate_fn(rows):
        return rows


def test_the_grid_shows_the_test_batches_as_post_processed_without_a_second_pass():
    import pandas as pd

    from adrun.samples import SampleCapture, predict_samples

    paths = ["/d/test/good/001.png", "/d/test/hole/000.png", "/d/test/good/000.png", "/d/test/good/002.png"]
    masks = ["", "/d/ground_truth/hole/000_mask.png", "", ""]
    frame = pd.DataFrame({"image_path": paths, "label_index": [0, 1, 0, 0], "mask_path": masks})
    datamodule = SimpleNamespace(test_data=SimpleNamespace(samples=frame))
    trainer = SimpleNamespace(datamodule=datamodule)
    cell = SimpleNamespace(label="m", eval_batch_size=8)
    untested = SimpleNamespace(post_processor=None)  # no thresholds: no verdicts, no masks
    captured = SampleCapture()
    captured.on_test_epoch_start(trainer, None)
    first = _batch(paths[:2], [0.1, 0.2])
    captured.on_test_batch_end(trainer, None, None, first, 0)
    first.pred_score *= 10  # the post-processor, a model callback, runs after the trainer's
    captured.on_test_batch_start(trainer, None, None, 1)
    captured.on_test_batch_end(trainer, None, None, _batch(paths[2:], [0.3, 0.4]), 1)
    captured.on_test_epoch_end(trainer, None)
    assert sorted(captured.outputs) == ["/d/test/good/000.png", "/d/test/good/001.png", "/d/test/hole/000.png"]
    # engine=None: any engine.predict would raise; the items are the captured ones, in pick order.
    items = predict_samples(None, untested, datamodule, cell, captured)
    assert [(i["image_path"], round(i["score"], 6)) for i in items] == [
        ("/d/test/good/000.png", 0.3),
        ("/d/test/good/001.png", 1.0),
        ("/d/test/hole/000.png", 2.0),
    ]
    assert items[2]["mask_path"] == masks[1] and items[0]["mask_path"] is None
    assert items[1]["anomaly_map"].shape == (4, 4) and items[1]["anomalous"] is None

    # A picked image the test did not see: the grid predicts the picked images itself.
    class Engine:
        def predict(self, model, dataloaders, return_predictions):
            self.seen = [p for batch in dataloaders for p in batch]
            return [_batch(picked, [0.5, 0.6, 0.7])]

    captured.outputs.pop("/d/test/good/000.png")
    picked = ["/d/test/good/000.png", "/d/test/good/001.png", "/d/test/hole/000.png"]
    engine = Engine()
    items = predict_samples(engine, untested, SimpleNamespace(test_data=Rows(frame)), cell, captured)
    assert engine.seen == picked and [i["score"] for i in items] == pytest.approx([0.5, 0.6, 0.7])

    # Image scores only (dfkde, ganomaly): a clear reason in the record, not a TypeError.
    captured.on_test_epoch_start(trainer, None)
    captured.on_test_batch_end(trainer, None, None, _batch(paths, [0.1, 0.2, 0.3, 0.4], maps=False), 0)
    captured.on_test_epoch_end(trainer, None)
    with pytest.raises(ValueError, match="m gives image scores only, no anomaly map to draw"):
        predict_samples(None, untested, datamodule, cell, captured)


def test_report_holds_tables_heatmap_grids_and_settings(reported):
    html = (reported / "report.html").read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    assert "<caption>pixel AUROC</caption>" in html and "<caption>image AUROC</caption>" in html
    assert 'alt="pixel AUROC heatmap"' in html
    for label in ("patchcore", "efficient_ad"):
        assert f'alt="sample grid {label} / tile"' in html
        assert f'id="cell-{label}-tile-seed-42"' in html
    assert "model.backbone" in html and "resnet18" in html  # settings from the record
    assert "fit (s)" in html and "samples (s)" in html  # timings from the record
    # Self-contained: every image inline, nothing fetched, no scripts.
    assert re.findall(r'<img src="([a-z]+):', html) == ["data"] * 3
    assert not re.search(r'(src|href)="(https?:)?//', html) and "<script" not in html
    assert (reported / "pixel_auroc.png").stat().st_size > 0


def test_demo_style_compare_through_the_cli(reported):
    from typer.testing import CliRunner

    from adrun.cli import app

    result = CliRunner().invoke(app, ["table", str(reported), "--compare", "assignment"])
    assert result.exit_code == 0, result.output
    assert "| category | patchcore | assignment | Δ | efficient_ad | assignment | Δ |" in result.output
    assert "synthetic data" in result.output
    assert "Compared with <code>assignment</code>" in (reported / "report.html").read_text()


# --------------------------------------------------------------------------- the browser


def find_browser() -> str | None:
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    return None


def install_browser() -> str | None:
    """Debian's chromium through apt, when we may; returns the binary or None."""
    if find_browser() or not shutil.which("apt-get"):
        return find_browser()
    prefix = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
    if prefix is None:
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]):
        done = subprocess.run(prefix + command, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            return None
    return find_browser()


@pytest.fixture(scope="module")
def browser():
    path = install_browser()
    if path is None:
        message = f"no headless browser ({', '.join(BROWSERS)}) and apt-get could not install chromium"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI must run the browser test)")
        pytest.skip(message)
    return path


class DevTools:
    """The few DevTools protocol calls the test needs, over one page's websocket."""

    def __init__(self, url: str):
        import websocket

        self.ws = websocket.create_connection(url, timeout=30, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, event: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == event for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(event)
            self.events.append(json.loads(self.ws.recv()))

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"]["value"]


def start(binary: str, profile: Path) -> tuple[subprocess.Popen, int]:
    process = subprocess.Popen(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--remote-debugging-port=0",
            "--remote-allow-origins=*",
            f"--user-data-dir={profile}",
            "--window-size=1280,1800",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    for line in process.stderr:  # "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/..."
        if match := re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line):
            # Keep draining stderr (dbus chatter), or a full pipe would stall the browser.
            threading.Thread(target=process.stderr.read, daemon=True).start()
            return process, int(match.group(1))
        if time.monotonic() > deadline:
            break
    process.kill()
    raise RuntimeError("chromium did not start its DevTools server")


def test_report_opens_in_a_real_browser(reported, browser, tmp_path):
    process, port = start(browser, tmp_path / "profile")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            pages = [t for t in json.load(response) if t["type"] == "page"]
        tools = DevTools(pages[0]["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Log"):
            tools.call(f"{domain}.enable")
        tools.call("Page.navigate", url=(reported / "report.html").resolve().as_uri())
        tools.wait_for("Page.loadEventFired")
        page = tools.evaluate("""JSON.stringify({
            title: document.title,
            tables: document.querySelectorAll('table').length,
            captions: [...document.querySelectorAll('caption')].map(c => c.textContent),
            images: [...document.images].map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth})),
            resources: performance.getEntriesByType('resource').map(r => r.name),
        })""")
        shot = tools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        (tmp_path / "report.png").write_bytes(base64.b64decode(shot))
        tools.ws.close()
    finally:
        process.kill()
        process.wait(timeout=30)
    page = json.loads(page)
    errors = [
        e
        for e in tools.events
        if e.get("method") == "Runtime.exceptionThrown"
        or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
        or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
    ]
    assert errors == []
    assert page["title"] == "tiny: adrun report"
    assert {"pixel AUROC", "image AUROC"} <= set(page["captions"]) and page["tables"] >= 4
    alts = [i["alt"] for i in page["images"]]
    assert alts == ["pixel AUROC heatmap", "sample grid patchcore / tile", "sample grid efficient_ad / tile"]
    assert all(i["complete"] and i["width"] > 100 for i in page["images"]), page["images"]
    assert page["resources"] == []  # nothing fetched: not a font, not a favicon
    from PIL import Image

    with Image.open(tmp_path / "report.png") as screenshot:
        assert screenshot.height > 1800  # the whole page, not a blank viewport
        assert len(screenshot.convert("RGB").getcolors(maxcolors=1 << 24)) > 1000
    if target := os.environ.get("ADRUN_REPORT_SCREENSHOT"):
        shutil.copy(tmp_path / "report.png", target)  # for a human to look at
