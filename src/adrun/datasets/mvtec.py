"""MVTec AD: ``<root>/<category>/train/good``, ``test/<defect>``, ``ground_truth/<defect>/*_mask.png``.

Also the base of the formats that share its layout (MPDD, VisA's split tree, BTech,
folder). anomalib's MVTec-style readers require masks; a category without any
``ground_truth/`` folder is read by anomalib's ``Folder`` datamodule with the same split
(train = train/good, test = test/*, validation = test), image metrics only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adrun.datasets import layout
from adrun.datasets.base import DatasetSpec, DataSettings
from adrun.errors import DataError


class MVTecStyle(DatasetSpec):
    normal = "good"
    extensions: tuple[str, ...] = (".png", ".PNG")
    # Where anomalib looks for the categories, relative to data.root (VisA: visa_pytorch).
    subdir = ""
    mask_glob = "ground_truth/<defect>/*_mask.png"
    mask_rule = "<image>_mask.png, as MVTec AD does"
    sorted_pairing = True  # anomalib pairs masks with images by sorted name
    masks_optional = True  # without ground_truth/: anomalib's Folder, image metrics only
    jpeg_note: str | None = None

    def exts(self, data: DataSettings) -> tuple[str, ...]:
        return self.extensions

    def mask_names(self, image: Path) -> list[str]:
        return [f"{image.stem}_mask{image.suffix}", image.name, f"{image.stem}_mask.png", f"{image.stem}.png"]

    def categories_root(self, root: Path) -> Path:
        return Path(root) / self.subdir if self.subdir else Path(root)

    def folder(self, root: Path, category: str) -> Path:
        return self.categories_root(root) / category

    def discover(self, root: Path, data: DataSettings) -> list[str]:
        where = self.categories_root(root)
        found = (
            [p.name for p in sorted(where.iterdir()) if (p / "train" / self.normal).is_dir()] if where.is_dir() else []
        )
        if not found:
            raise DataError(
                f"data.root {root}: no category folder with train/{self.normal} inside; point data.root at a "
                f"folder in {self.title} layout ({self.layout})"
            )
        return found

    def problems(self, root: Path, category: str, data: DataSettings, verify: bool = False) -> list[str]:
        root = Path(root)
        if not root.is_dir():
            return [layout.missing_root(root, self.title, self.fetchable)]
        base = self.folder(root, category)
        if not base.is_dir():
            return self.absent(root, category, base)
        return layout.mvtec_style(
            base,
            category,
            title=self.title,
            normal=self.normal,
            exts=self.exts(data),
            mask_names=self.mask_names,
            mask_glob=self.mask_glob,
            mask_rule=self.mask_rule,
            sorted_pairing=self.sorted_pairing,
            masks_optional=self.masks_optional,
            test_good_from_train=data.test_good_from_train,
            verify=verify,
            jpeg_note=self.jpeg_note,
        )

    def absent(self, root: Path, category: str, base: Path) -> list[str]:
        return [layout.missing_category(category, base, self.categories_root(root))]

    def has_masks(self, root: Path, category: str, data: DataSettings) -> bool:
        return (self.folder(root, category) / "ground_truth").is_dir()

    def datamodule_class(self, root: Path, category: str, data: DataSettings) -> type:
        if not self.has_masks(root, category, data):
            from anomalib.data import Folder

            return Folder
        return super().datamodule_class(root, category, data)

    def arguments(self, root: Path, category: str, data: DataSettings) -> dict[str, Any]:
        if self.has_masks(root, category, data):
            return {"root": root, "category": category}
        return self.folder_arguments(self.folder(root, category), category, data, masks=False)

    def folder_arguments(self, base: Path, category: str, data: DataSettings, masks: bool) -> dict[str, Any]:
        """anomalib's Folder over one category in this layout, with MVTecAD's split rules."""
        defects = [d for d in layout.subfolders(base / "test") if d != self.normal]
        return {
            "name": category,
            "root": base,
            "normal_dir": f"train/{self.normal}",
            "normal_test_dir": f"test/{self.normal}",
            "abnormal_dir": [f"test/{d}" for d in defects],
            "mask_dir": [f"ground_truth/{d}" for d in defects] if masks else None,
            "extensions": self.exts(data),
            # Validate on the test set, as MVTecAD does; Folder's default would halve it.
            "val_split_mode": "same_as_test",
        }


class MVTec(MVTecStyle):
    name = "mvtec"
    title = "MVTec AD"
    anomalib_class = "MVTecAD"
    default_root = "./datasets/MVTecAD"
    layout = "<root>/<category>/train/good/*.png, test/<defect>/*.png, ground_truth/<defect>/<image>_mask.png"
    fetchable = True
    jpeg_note = (
        "format mvtec reads .png only (as anomalib's MVTecAD does), so it is left out; "
        "set data.format: folder to read it"
    )


SPEC = MVTec()
