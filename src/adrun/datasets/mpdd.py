"""MPDD: MVTec AD's layout (``train/good``, ``test/<defect>``, ``ground_truth/<defect>/*_mask.png``)."""

from __future__ import annotations

from adrun.datasets.mvtec import MVTecStyle


class MPDD(MVTecStyle):
    name = "mpdd"
    title = "MPDD"
    anomalib_class = "MPDD"
    default_root = "./datasets/MPDD"
    layout = "<root>/<category>/train/good/*.png, test/<defect>/*.png, ground_truth/<defect>/<image>_mask.png"
    fetchable = False  # anomalib's MPDD asks for a manual download
    jpeg_note = (
        "format mpdd reads .png only (as anomalib's MPDD does), so it is left out; set data.format: folder to read it"
    )


SPEC = MPDD()
