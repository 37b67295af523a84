"""synthetic: adrun's generated textures (adrun.synthetic), MVTec AD layout, read by anomalib's MVTecAD."""

from __future__ import annotations

from adrun.datasets.mvtec import MVTec


class Synthetic(MVTec):
    name = "synthetic"
    title = "synthetic"
    default_root = "<output>/<name>/data"
    layout = "generated under <output>/<name>/data (or data.root) in MVTec AD layout"
    fetchable = False


SPEC = Synthetic()
