"""synthetic: adrun's generated textures (adrun.synthetic), MVTec AD layout, read by anomalib's MVTecAD."""

from __future__ import annotations

from adrun.datasets.mvtec import SPEC as SPEC_MVTEC
from adrun.datasets.mvtec import MVTec


class Synthetic(MVTec):
    name = "synthetic"
    title = "MVTec AD"  # its layout, in every line about it
    default_root = "<output>/<name>/data"
    layout = "generated under <output>/<name>/data (or data.root) in MVTec AD layout"
    fetchable = False  # generated before the sweep, never downloaded

    def gone_hint(self) -> str:
        return SPEC_MVTEC.gone_hint()  # read as MVTec AD: the same line as format mvtec


SPEC = Synthetic()
