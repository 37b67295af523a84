"""The dataset formats adrun reads: one ``DatasetSpec`` per ``data.format`` (see ``base``).

Adding a format: a module here with its spec, and one line in ``FORMATS``.
"""

from __future__ import annotations

from adrun.datasets import btech, folder, kolektor, mpdd, mvtec, mvtec_ad2, mvtec_loco, realiad, synthetic, visa
from adrun.datasets.base import DatasetSpec

FORMATS: dict[str, DatasetSpec] = {
    s.name: s
    for s in (
        mvtec.SPEC,
        mvtec_ad2.SPEC,
        mvtec_loco.SPEC,
        visa.SPEC,
        btech.SPEC,
        mpdd.SPEC,
        kolektor.SPEC,
        realiad.SPEC,
        folder.SPEC,
        synthetic.SPEC,
    )
}
FORMAT_NAMES = tuple(FORMATS)


def format_spec(name: str) -> DatasetSpec:
    return FORMATS[name]
