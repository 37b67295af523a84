"""folder: MVTec AD's layout with any image type (``data.extensions``) and masks optional,
read by anomalib's ``Folder`` datamodule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adrun.datasets import layout
from adrun.datasets.base import DataSettings
from adrun.datasets.mvtec import MVTecStyle


class FolderFormat(MVTecStyle):
    name = "folder"
    title = "MVTec AD"
    anomalib_class = "Folder"
    default_root = "./datasets/MVTecAD"
    layout = (
        "<root>/<category>/train/good/*, test/good/*, test/<defect>/*, optional ground_truth/<defect>/*, "
        "any of data.extensions"
    )

    def exts(self, data: DataSettings) -> tuple[str, ...]:
        return layout.both_cases(data.extensions)

    def datamodule_class(self, root: Path, category: str, data: DataSettings) -> type:
        from anomalib.data import Folder

        return Folder

    def arguments(self, root: Path, category: str, data: DataSettings) -> dict[str, Any]:
        return self.folder_arguments(
            self.folder(root, category), category, data, masks=self.has_masks(root, category, data)
        )


SPEC = FolderFormat()
