"""Pre-download what a config's cells need, with anomalib's and timm's own download code.

Run on a machine with internet; then copy the caches (docs/offline.md says which
folders) to the offline machine. Everything lands where a run looks first: the
Hugging Face hub cache (timm backbones), anomalib's ``pre_trained`` cache (EfficientAd
teachers), the configured ``imagenet_dir`` and ``data.root``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from adrun import data, preflight
from adrun.config import EfficientAdConfig, Experiment, PatchcoreConfig, experiment_dir, model_entries
from adrun.errors import WeightsError


@dataclass
class Item:
    kind: str  # backbone, teacher, imagenette, dataset
    name: str
    target: Path
    present: bool
    download: Callable[[], None]


def _backbone(name: str) -> None:
    import timm

    # timm's own loader: resolves the tag, downloads into the hub cache, checks the file loads.
    timm.create_model(name, pretrained=True)


def _teacher() -> None:
    from anomalib.data.utils import download_and_extract
    from anomalib.models.image.efficient_ad.lightning_model import WEIGHTS_DOWNLOAD_INFO
    from anomalib.utils.path import get_pretrained_weights_dir

    download_and_extract(get_pretrained_weights_dir(), WEIGHTS_DOWNLOAD_INFO)


def _imagenette(folder: Path) -> None:
    from anomalib.data.utils import download_and_extract
    from anomalib.models.image.efficient_ad.lightning_model import IMAGENETTE_DOWNLOAD_INFO

    download_and_extract(folder, IMAGENETTE_DOWNLOAD_INFO)


def _mvtec(root: Path, category: str) -> None:
    from anomalib.data import MVTecAD

    MVTecAD(root=root, category=category).prepare_data()


def items(experiment: Experiment, with_data: bool = True) -> list[Item]:
    """What the config needs from the internet, each marked present or not."""
    out: list[Item] = []
    seen: set[tuple[str, str]] = set()

    def add(item: Item) -> None:
        if (item.kind, item.name) not in seen:
            seen.add((item.kind, item.name))
            out.append(item)

    for _, model in model_entries(experiment):
        if isinstance(model, PatchcoreConfig) and model.pre_trained and model.weights is None:
            name = model.backbone
            add(Item("backbone", name, preflight.hf_cache_dir(), preflight.hf_cached(name) is not None,
                     lambda name=name: _backbone(name)))
        elif isinstance(model, EfficientAdConfig):
            if model.teacher == "auto":
                folder = preflight.teacher_dir()
                file = folder / f"pretrained_teacher_{model.model_size}.pth"
                add(Item("teacher", file.name, folder, file.is_file(), _teacher))
            if model.imagenet_dir != "builtin":
                folder = Path(model.imagenet_dir)
                add(Item("imagenette", str(folder), folder, folder.is_dir(), lambda f=folder: _imagenette(f)))
    if with_data and experiment.data.format == "mvtec" and experiment.data.categories != "all":
        root = data.dataset_root(experiment.data, experiment_dir(experiment))
        for category in experiment.data.categories:
            add(Item("dataset", category, root, (root / category).is_dir(),
                     lambda c=category: _mvtec(root, c)))
    return out


def fetch(experiment: Experiment, with_data: bool = True,
          on_item: Callable[[Item, str], None] | None = None) -> list[Item]:
    """Download every missing item; ``on_item(item, "present" | "start" | "done")`` reports progress."""
    todo = items(experiment, with_data)
    if preflight.hf_offline() and any(i.kind == "backbone" and not i.present for i in todo):
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
