"""Real-IAD: ``<root>/realiad_256/<category>/...`` images and ``<root>/realiad_jsons/realiad_jsons/<category>.json``
listing them (``train``/``test``, each item's ``image_path``, ``mask_path`` or null, ``anomaly_class``).

anomalib's default ``test_split_mode=none`` keeps only the anomalous test images (no
AUROC possible); adrun passes ``from_dir`` so the JSON's test split is used as it is.
Masks are optional. adrun reads the 256 px release, anomalib's default resolution.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from adrun.datasets import layout
from adrun.datasets.base import DatasetSpec, DataSettings
from adrun.errors import DataError

RESOLUTION = "256"
JSONS = "realiad_jsons/realiad_jsons"
CATEGORIES = (
    "audiojack",
    "bottle_cap",
    "button_battery",
    "end_cap",
    "eraser",
    "fire_hood",
    "mint",
    "mounts",
    "pcb",
    "phone_battery",
    "plastic_nut",
    "plastic_plug",
    "porcelain_doll",
    "regulator",
    "rolled_strip_base",
    "sim_card_set",
    "switch",
    "tape",
    "terminalblock",
    "toothbrush",
    "toy_brick",
    "toy",
    "transistor1",
    "u_block",
    "usb_adaptor",
    "usb",
    "vcpill",
    "wooden_beads",
    "woodstick",
    "zipper",
)


class RealIAD(DatasetSpec):
    name = "realiad"
    title = "Real-IAD"
    anomalib_class = "RealIAD"
    default_root = "./datasets/Real-IAD"
    layout = f"<root>/realiad_{RESOLUTION}/<category>/... and <root>/{JSONS}/<category>.json"
    fetchable = False  # anomalib's RealIAD asks for a manual (gated) Hugging Face download
    categories = CATEGORIES

    def folder(self, root: Path, category: str) -> Path:
        return Path(root) / f"realiad_{RESOLUTION}" / category

    def discover(self, root: Path, data: DataSettings) -> list[str]:
        found = [c for c in CATEGORIES if self.folder(root, c).is_dir()]
        if not found:
            raise DataError(
                f"data.root {root}: no category folder under realiad_{RESOLUTION}/; point data.root at "
                f"a folder in {self.title} layout ({self.layout})"
            )
        return found

    def _json(self, root: Path, category: str) -> Path:
        return Path(root) / JSONS / f"{category}.json"

    def problems(self, root: Path, category: str, data: DataSettings, verify: bool = False) -> list[str]:
        root = Path(root)
        where = f"category {category!r}"
        if category not in CATEGORIES:
            return [
                f"{where}: {self.title} has no such category (anomalib accepts only its 30); choose from "
                f"{', '.join(CATEGORIES)}"
            ]
        if not root.is_dir():
            return [layout.missing_root(root, self.title, self.fetchable)]
        base = self.folder(root, category)
        if not base.is_dir():
            return [layout.missing_category(category, base, base.parent)]
        listing = self._json(root, category)
        try:
            meta = json.loads(listing.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return [f"{where}: {listing} is missing; {self.title} lists each category's images there"]
        except (OSError, ValueError) as exc:
            return [f"{where}: {listing} is not readable JSON ({exc}); restore it from the download"]
        if not isinstance(meta, dict) or not all(isinstance(meta.get(k), list) for k in ("train", "test")):
            return [f"{where}: {listing} needs a 'train' and a 'test' list"]
        problems = []
        try:
            items = [
                (split, i["image_path"], i.get("mask_path"), i["anomaly_class"])
                for split in ("train", "test")
                for i in meta[split]
            ]
        except (KeyError, TypeError):
            return [f"{where}: {listing}: every item needs image_path and anomaly_class (and mask_path or null)"]
        missing = [base / p for _, p, _, _ in items if not (base / p).is_file()]
        missing += [base / m for _, _, m, _ in items if m and not (base / m).is_file()]
        if missing:
            problems.append(f"{where}: {layout.first(missing, 'files')} is listed in {listing.name} but missing")
        if not any(s == "train" for s, *_ in items):
            problems.append(f"{where}: {listing} lists no train image")
        labels = {c == "OK" for s, _, _, c in items if s == "test"}
        if labels != {True, False}:
            problems.append(
                f"{where}: the test split of {listing.name} needs both OK and defective images (AUROC needs both)"
            )
        files = [base / p for _, p, _, _ in items if (base / p).is_file()]
        masks = [base / m for _, _, m, _ in items if m and (base / m).is_file()]
        return problems + layout.header_problems(where, [*files, *masks], verify)

    def has_masks(self, root: Path, category: str, data: DataSettings) -> bool:
        try:
            meta = json.loads(self._json(root, category).read_text(encoding="utf-8"))
            return any(i.get("mask_path") for i in meta["test"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return False

    def arguments(self, root: Path, category: str, data: DataSettings) -> dict[str, Any]:
        return {"root": root, "category": category, "resolution": RESOLUTION, "test_split_mode": "from_dir"}


SPEC = RealIAD()
