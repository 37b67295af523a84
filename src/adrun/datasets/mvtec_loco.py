"""MVTec LOCO AD: ``<root>/<category>/train/good``, ``validation/good``, ``test/good``,
``test/logical_anomalies``, ``test/structural_anomalies``, and one folder of masks per
anomalous image, ``ground_truth/<defect>/<image>/000.png`` (anomalib ORs them into one).
"""

from __future__ import annotations

from pathlib import Path

from adrun.datasets import layout
from adrun.datasets.base import DatasetSpec, DataSettings
from adrun.errors import DataError

EXTENSIONS = (".png", ".PNG")


class MVTecLOCO(DatasetSpec):
    name = "mvtec_loco"
    title = "MVTec LOCO AD"
    anomalib_class = "MVTecLOCO"
    default_root = "./datasets/MVTec_LOCO"
    layout = (
        "<root>/<category>/train/good/*.png, validation/good/*, test/good/*, test/<defect>/*, "
        "ground_truth/<defect>/<image>/*.png"
    )
    # anomalib 2.7.0's MVTecLOCO has no download of its own (its prepare_data does nothing).
    fetchable = False
    pandas_fix = True

    def discover(self, root: Path, data: DataSettings) -> list[str]:
        found = [p.name for p in sorted(Path(root).iterdir()) if (p / "validation" / "good").is_dir()]
        if not found:
            raise DataError(
                f"data.root {root}: no category folder with validation/good inside; point data.root at "
                f"a folder in {self.title} layout ({self.layout})"
            )
        return found

    def problems(self, root: Path, category: str, data: DataSettings, verify: bool = False) -> list[str]:
        root = Path(root)
        if not root.is_dir():
            return [layout.missing_root(root, self.title, self.fetchable)]
        base = root / category
        if not base.is_dir():
            return [layout.missing_category(category, base, root)]
        where = f"category {category!r}"
        problems = []
        for sub in ("train/good", "validation/good", "test/good"):
            if not layout.images(base / sub, EXTENSIONS):
                problems.append(
                    f"{where}: {base / sub} has no .png images; {self.title} layout needs <category>/{sub}/*.png"
                )
        defects = [d for d in layout.subfolders(base / "test") if d != "good"]
        if not any(layout.images(base / "test" / d, EXTENSIONS) for d in defects):
            problems.append(
                f"{where}: {base / 'test'} has no anomalous images; {self.title} layout needs "
                "<category>/test/<logical_anomalies|structural_anomalies>/*.png"
            )
        anomalous = [i for d in defects for i in sorted(layout.images(base / "test" / d, EXTENSIONS))]
        unmatched = [
            i for i in anomalous if not layout.images(base / "ground_truth" / i.parent.name / i.stem, EXTENSIONS)
        ]
        if unmatched:
            image = unmatched[0]
            problems.append(
                f"{where}: {layout.first(unmatched, 'images')} has no masks (expected "
                f"{base / 'ground_truth' / image.parent.name / image.stem}/000.png); every anomalous "
                "image needs its own folder of masks, ground_truth/<defect>/<image>/*.png"
            )
        files = [
            p
            for sub in ("train/good", "validation/good", "test/good")
            for p in sorted(layout.images(base / sub, EXTENSIONS))
        ]
        masks = [
            m
            for i in anomalous
            for m in sorted(layout.images(base / "ground_truth" / i.parent.name / i.stem, EXTENSIONS))
        ]
        return problems + layout.header_problems(where, [*files, *anomalous, *masks], verify)


SPEC = MVTecLOCO()
