"""VisA, in the split tree anomalib reads: ``<root>/visa_pytorch/<category>/train/good``,
``test/good``, ``test/bad``, ``ground_truth/bad/<image>.png``.

anomalib's ``Visa.prepare_data`` builds that tree from the raw download by writing
``visa_pytorch/`` into the dataset folder: adrun never runs it on a user's dataset. A
raw-only folder is refused with the command that converts it, for the user to run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from adrun.datasets.mvtec import MVTecStyle
from adrun.errors import DataError

CATEGORIES = (
    "candle",
    "capsules",
    "cashew",
    "chewinggum",
    "fryum",
    "macaroni1",
    "macaroni2",
    "pcb1",
    "pcb2",
    "pcb3",
    "pcb4",
    "pipe_fryum",
)


class Visa(MVTecStyle):
    name = "visa"
    title = "VisA"
    anomalib_class = "Visa"
    default_root = "./datasets/visa"
    layout = "<root>/visa_pytorch/<category>/train/good/*.JPG, test/good/*, test/bad/*, ground_truth/bad/<image>.png"
    subdir = "visa_pytorch"
    extensions = (".png", ".jpg", ".JPG")  # anomalib's VisaDataset
    mask_glob = "ground_truth/<defect>/<image>.png"
    mask_rule = "<image>.png, as VisA's split tree does"
    fetchable = True
    categories = CATEGORIES

    def mask_names(self, image: Path) -> list[str]:
        return [f"{image.stem}.png", f"{image.stem}_mask.png"]

    def absent(self, root: Path, category: str, base: Path) -> list[str]:
        if (Path(root) / category / "Data" / "Images").is_dir():
            return [
                f"category {category!r}: {root} holds VisA's raw download but not the split tree {base} that "
                "anomalib reads, and adrun never writes into a dataset; convert it once yourself with "
                f"python -c \"from anomalib.data import Visa; Visa(root='{root}', category='{category}')"
                '.prepare_data()" (it writes visa_pytorch/ there)'
            ]
        return super().absent(root, category, base)

    def download(self, root: Path, category: str) -> Callable[[], None] | None:
        get = super().download(root, category)

        def guarded() -> None:
            if (Path(root) / category).exists():  # anomalib would split it in place
                raise DataError(f"{root / category} exists: adrun fetch does not convert a VisA download in place")
            if get is not None:
                get()

        return guarded


SPEC = Visa()
