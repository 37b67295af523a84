"""KolektorSDD: ``<root>/kosNN/PartK.jpg`` with ``PartK_label.bmp`` beside every image.

The mask decides the label (all zero: good); anomalib puts every defective image and
20% of the good ones (fixed split, ``random_state=42``) in the test set. The dataset has
no categories: adrun names its one category ``kolektor``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adrun.datasets import layout
from adrun.datasets.base import DatasetSpec, DataSettings

CATEGORY = "kolektor"


class Kolektor(DatasetSpec):
    name = "kolektor"
    title = "KolektorSDD"
    anomalib_class = "Kolektor"
    default_root = "./datasets/kolektor"
    layout = "<root>/kosNN/PartK.jpg with PartK_label.bmp beside each"
    fetchable = True
    categories = (CATEGORY,)

    def folder(self, root: Path, category: str) -> Path:
        return Path(root)

    def discover(self, root: Path, data: DataSettings) -> list[str]:
        return [CATEGORY]

    def problems(self, root: Path, category: str, data: DataSettings, verify: bool = False) -> list[str]:
        root = Path(root)
        if category != CATEGORY:
            return [f"category {category!r}: {self.title} has no categories; set data.categories: [{CATEGORY}]"]
        if not root.is_dir():
            return [layout.missing_root(root, self.title, self.fetchable)]
        where = f"category {category!r}"
        parts = sorted(p for p in root.glob("*/*.jpg"))
        if not parts:
            return [f"{where}: {root} has no <folder>/*.jpg images; {self.title} layout is {self.layout}"]
        unmatched = [p for p in parts if not p.with_name(f"{p.stem}_label.bmp").is_file()]
        problems = []
        if unmatched:
            problems.append(
                f"{where}: {layout.first(unmatched, 'images')} has no mask (expected "
                f"{unmatched[0].stem}_label.bmp beside it); every image needs its <image>_label.bmp"
            )
        masks = [p.with_name(f"{p.stem}_label.bmp") for p in parts if p not in unmatched]
        sizes: dict[Path, tuple[int, int]] = {}
        problems += layout.header_problems(where, [*parts, *masks], verify, sizes)
        problems += layout.size_problem(
            where, [(p, p.with_name(f"{p.stem}_label.bmp")) for p in parts if p not in unmatched], sizes
        )
        if not problems and not any(_defective(m) for m in masks):
            problems.append(
                f"{where}: every mask under {root} is empty, so no test image is defective and AUROC "
                "is undefined; KolektorSDD labels an image defective by its non-zero mask"
            )
        return problems

    def arguments(self, root: Path, category: str, data: DataSettings) -> dict[str, Any]:
        return {"root": root}

    def download_arguments(self, root: Path, category: str) -> dict[str, Any]:
        return {"root": root}


def _defective(mask: Path) -> bool:
    from PIL import Image

    with Image.open(mask) as image:
        return image.convert("L").getbbox() is not None


SPEC = Kolektor()
