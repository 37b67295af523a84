"""Pre-download what a config's cells need, with anomalib's and timm's own download code.

Run on a machine with internet; then copy the caches (docs/offline.md says which
folders) to the offline machine. Everything lands where a run looks first: the
Hugging Face hub cache (timm backbones), anomalib's ``pre_trained`` cache, the model
entries' extra data folders and ``data.root`` (each format's download from its spec
in ``adrun.datasets``). What each model needs comes from its spec.
"""

from __future__ import annotations

from collections.abc import Callable

from adrun import checks, data
from adrun.checks import Download
from adrun.config import Experiment, experiment_dir, model_entries
from adrun.datasets import format_spec
from adrun.errors import WeightsError
from adrun.models import spec_of


def items(experiment: Experiment, with_data: bool = True) -> list[Download]:
    """What the config needs from the internet, each marked present or not."""
    out: list[Download] = []
    seen: set[tuple[str, str]] = set()

    def add(item: Download) -> None:
        if (item.kind, item.name) not in seen:
            seen.add((item.kind, item.name))
            out.append(item)

    for _, model in model_entries(experiment):
        for item in spec_of(model).downloads(model):
            add(item)
    dataset = format_spec(experiment.data.format)
    if with_data and dataset.fetchable and experiment.data.categories != "all":
        # anomalib's own download of the format (its datamodule's prepare_data), into data.root.
        root = data.dataset_root(experiment.data, experiment_dir(experiment))
        for category in experiment.data.categories:
            download = dataset.download(root, category)
            if download is not None:
                add(Download("dataset", category, root, dataset.folder(root, category).is_dir(), download))
    return out


def fetch(
    experiment: Experiment, with_data: bool = True, on_item: Callable[[Download, str], None] | None = None
) -> list[Download]:
    """Download every missing item; ``on_item(item, "present" | "start" | "done")`` reports progress."""
    todo = items(experiment, with_data)
    if checks.hf_offline() and any(i.kind == "backbone" and not i.present for i in todo):
        raise WeightsError("HF_HUB_OFFLINE=1 is set, so timm cannot download backbones; unset it to fetch")
    for item in todo:
        if item.present:
            if on_item:
                on_item(item, "present")
            continue
        if on_item:
            on_item(item, "start")
        try:
            item.download()
        except Exception as exc:  # network errors, hash mismatch: one line, the item named
            raise WeightsError(
                f"fetching {item.kind} {item.name} failed ({type(exc).__name__}: {_first_line(exc)}); "
                "check the network and run adrun fetch again (finished items are kept)"
            ) from exc
        if on_item:
            on_item(item, "done")
    return todo


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else "no message"
