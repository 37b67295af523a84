"""MVTec AD 2: ``<root>/<category>/train/good``, ``validation/good``, ``test_public/good``,
``test_public/bad``, ``test_public/ground_truth/bad/<image>_mask.png``.

anomalib validates on ``validation/good`` (normal images only) and tests on
``test_public``; the private test sets have no labels and are not used.
"""

from __future__ import annotations

from pathlib import Path

from adrun.datasets import layout
from adrun.datasets.base import DatasetSpec, DataSettings
from adrun.errors import DataError

EXTENSIONS = (".png", ".PNG")


class MVTecAD2(DatasetSpec):
    name = "mvtec_ad2"
    title = "MVTec AD 2"
    anomalib_class = "MVTecAD2"
    default_root = "./datasets/MVTec_AD_2"
    layout = (
        "<root>/<category>/train/good/*.png, validation/good/*, test_public/good/*, test_public/bad/*, "
        "test_public/ground_truth/bad/<image>_mask.png"
    )
    fetchable = True
    pandas_fix = True

    def discover(self, root: Path, data: DataSettings) -> list[str]:
        found = [p.name for p in sorted(Path(root).iterdir()) if (p / "test_public").is_dir()]
        if not found:
            raise DataError(
                f"data.root {root}: no category folder with test_public inside; point data.root at a "
                f"folder in {self.title} layout ({self.layout})"
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
        for sub in ("train/good", "validation/good", "test_public/good", "test_public/bad"):
            if not layout.images(base / sub, EXTENSIONS):
                problems.append(
                    f"{where}: {base / sub} has no .png images; {self.title} layout needs <category>/{sub}/*.png"
                )
        bad = sorted(layout.images(base / "test_public" / "bad", EXTENSIONS))
        masks = base / "test_public" / "ground_truth" / "bad"
        unmatched = [i for i in bad if not (masks / f"{i.stem}_mask.png").is_file()]
        if unmatched:
            problems.append(
                f"{where}: {layout.first(unmatched, 'images')} has no mask (expected "
                f"{masks / (unmatched[0].stem + '_mask.png')}); every test_public/bad image needs "
                "test_public/ground_truth/bad/<image>_mask.png"
            )
        files = [
            p
            for sub in ("train/good", "validation/good", "test_public/good", "test_public/bad")
            for p in sorted(layout.images(base / sub, EXTENSIONS))
        ]
        sizes: dict[Path, tuple[int, int]] = {}
        mask_files = [masks / f"{i.stem}_mask.png" for i in bad if i not in unmatched]
        problems += layout.header_problems(where, [*files, *mask_files], verify, sizes)
        return problems + layout.size_problem(
            where, list(zip([i for i in bad if i not in unmatched], mask_files, strict=True)), sizes
        )


SPEC = MVTecAD2()
