"""Export a trained cell through anomalib's ``Engine.export``: torch, ONNX or OpenVINO.

The exported model is anomalib's whole inference module: pre-processing (resize,
crop, normalise), the model and post-processing (normalised anomaly map, score,
labels). ONNX and OpenVINO take a fixed ``1 x 3 x S x S`` float input in [0, 1],
``S`` being the model entry's ``image_size``.

The files land in ``<run>/export/<format>/`` (``model.pt``, ``model.onnx``, or
``model.xml`` + ``model.bin``), moved into place only once anomalib has finished.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

from adrun.errors import ExportError

FORMATS = ("torch", "onnx", "openvino")
# What each format imports beyond adrun's own dependencies: the `export` extra.
NEEDS = {"torch": (), "onnx": ("onnx", "onnxscript"), "openvino": ("onnx", "onnxscript", "openvino")}
# torch's dynamo exporter writes opset 18; anomalib's default (14) needs a down-conversion
# that fails on Patchcore's graph, so keep the exporter's own opset.
OPSET = 18
INSTALL = "pip install 'adrun[export]'"


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt}: unknown; choose one of {', '.join(FORMATS)}")
    missing = [name for name in NEEDS[fmt] if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"--format {fmt} needs {', '.join(missing)}, not installed here; run: {INSTALL}")


def input_size(cell) -> int:
    return cell.model.image_size or 256


def load_weights(model, ckpt: Path, model_name: str) -> None:
    """The checkpoint's state into adrun's own build of the model, as Lightning's test does.

    Not ``Engine.export(ckpt_path=...)``: that rebuilds the model from the saved
    hyperparameters, which for a pretrained backbone means fetching its weights again.
    Read with the weights-only unpickler (``run.read_checkpoint``): nothing in the file runs.
    """
    from adrun.run import read_checkpoint

    state = read_checkpoint(ckpt, model_name)
    model.on_load_checkpoint(state)
    model.load_state_dict(state["state_dict"])
    model.eval()


def export_run(run: Path, fmt: str, out: Path | None = None) -> Path:
    """Export the cell at ``run`` as ``fmt``; return the main exported file."""
    from adrun.run import _load, cell_log, exp_dir_of

    check_format(fmt)
    run = Path(run)
    record, cell, ckpt = _load(run)
    out = Path(out) if out is not None else run / "export"
    target = out / fmt
    target.mkdir(parents=True, exist_ok=True)
    with cell_log(target), tempfile.TemporaryDirectory(dir=out, prefix=".export-") as tmp:
        from adrun import registry

        model = registry.build_model(cell, exp_dir_of(run))
        load_weights(model, ckpt, cell.model.name)
        engine = registry.build_engine(cell, Path(tmp) / "anomalib")
        size = input_size(cell)
        path = engine.export(
            model,
            fmt,
            export_root=Path(tmp),
            input_size=None if fmt == "torch" else (size, size),
            onnx_kwargs=None if fmt == "torch" else {"opset_version": OPSET},
        )
        if path is None:
            raise ExportError(f"{run}: anomalib exported nothing as {fmt}; see {target / 'log.txt'}")
        # model.xml needs its model.bin: move the whole folder's files, each atomically.
        for file in sorted(Path(path).parent.iterdir()):
            if file.is_file():
                os.replace(file, target / file.name)
        return target / Path(path).name
