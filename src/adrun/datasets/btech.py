"""BTech (BTAD): ``<root>/<01|02|03>/train/ok``, ``test/ok``, ``test/ko``, ``ground_truth/ko/<image>.png``.

anomalib does not look for BTech's masks: it derives ``ground_truth/ko/<stem>.png`` and
fails at the first test batch that lacks one, so the preflight checks every mask.
"""

from __future__ import annotations

from pathlib import Path

from adrun.datasets.mvtec import MVTecStyle


class BTech(MVTecStyle):
    name = "btech"
    title = "BTech"
    anomalib_class = "BTech"
    default_root = "./datasets/BTech"
    layout = "<root>/<01, 02 or 03>/train/ok/*.bmp or *.png, test/ok/*, test/ko/*, ground_truth/ko/<image>.png"
    normal = "ok"
    extensions = (".bmp", ".BMP", ".png", ".PNG")
    mask_glob = "ground_truth/<defect>/<image>.png"
    mask_rule = "<image>.png (a PNG whatever the image's type), as BTech does"
    sorted_pairing = False  # the mask path is derived from the image's name
    # anomalib's BTech download writes into data.root's parent and converts the images
    # in place: adrun fetch does not run it.
    fetchable = False

    def mask_names(self, image: Path) -> list[str]:
        return [f"{image.stem}.png"]


SPEC = BTech()
