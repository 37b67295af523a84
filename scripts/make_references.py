"""Regenerate src/adrun/references/anomalib.csv from the installed anomalib's model READMEs.

    python scripts/make_references.py

The numbers are parsed from the benchmark tables in the READMEs, never typed by hand,
so a new anomalib release is one run of this script (and a look at the diff). Only
per-category MVTec AD tables of image and pixel AUROC are taken; every model README
is listed in the header, those without such a table as well.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from importlib.metadata import version
from pathlib import Path

import anomalib
from anomalib.data.datasets.image.mvtecad import CATEGORIES

OUT = Path(__file__).resolve().parents[1] / "src" / "adrun" / "references" / "anomalib.csv"
MODELS = Path(anomalib.__file__).parent / "models" / "image"
# "### <heading>" of a table -> metric. A table under any other heading is skipped.
SECTIONS = {"Image-Level AUC": "image_AUROC", "Pixel-Level AUC": "pixel_AUROC"}


@dataclass(frozen=True)
class Readme:
    """How one model README lays out its MVTec AD tables.

    ``layout``:
    - ``rows``: one row per variant, one column per category (most READMEs); the metric
      comes from the ``### `` heading above the table (``sections``).
    - ``transposed``: one row per category, one column per variant; metric from the heading.
    - ``metrics``: one row per category, one column per metric (``columns``: header -> (metric, variant key)).

    ``variants``: the table's row or column label (or the section's variant key) ->
    (variant name, match condition on the adrun model entry).
    """

    model: str
    variants: dict[str, tuple[str, str]]
    layout: str = "rows"
    sections: dict[str, tuple[str, str | None]] = field(
        default_factory=lambda: {heading: (metric, None) for heading, metric in SECTIONS.items()}
    )
    columns: dict[str, tuple[str, str]] = field(default_factory=dict)
    percent: bool = False  # values published as percentages (98.37): divided by 100


WRN50 = ("Wide ResNet-50", "backbone=wide_resnet50_2")
R18 = ("ResNet-18", "backbone=resnet18")
READMES = [
    # patchcore and efficient_ad first: their rows are those adrun shipped before the zoo.
    Readme("patchcore", {"Wide ResNet-50": WRN50, "ResNet-18": R18}),
    Readme(
        "efficient_ad",
        {
            "EfficientAd-S": ("EfficientAd-S", "model_size=small"),
            "EfficientAd-M": ("EfficientAd-M", "model_size=medium"),
        },
    ),
    Readme("padim", {"ResNet-18": R18, "Wide ResNet-50": WRN50}),
    Readme("stfpm", {"ResNet-18": R18, "Wide ResNet-50": WRN50}),
    Readme("reverse_distillation", {"Wide ResNet-50": WRN50}),
    Readme("dfm", {"ResNet-18": R18, "Wide ResNet-50": WRN50}),
    Readme("dfkde", {"ResNet-18": R18, "Wide ResNet-50": WRN50}),
    Readme("fre", {"ResNet-50": ("ResNet-50", "backbone=resnet50"), "Wide ResNet-50": WRN50}),
    Readme("cflow", {"Wide ResNet-50": WRN50}),
    Readme("glass", {"Wide ResNet-50": WRN50}),
    Readme("cfa", {"ResNet-18": R18, "Wide ResNet50": WRN50}, layout="transposed"),
    # Fastflow takes exactly these four backbones (fastflow/torch_model.py).
    Readme(
        "fastflow",
        {
            "ResNet-18": R18,
            "Wide ResNet50": WRN50,
            "DeiT": ("DeiT", "backbone=deit_base_distilled_patch16_384"),
            "CaiT": ("CaiT", "backbone=cait_m48_448"),
        },
        layout="transposed",
    ),
    # CS-Flow publishes one table per image size; the heading names the size.
    Readme(
        "csflow",
        {"768": ("EfficientNet-B5 768 px", "image_size=768"), "256": ("EfficientNet-B5 256 px", "image_size=256")},
        sections={
            "Image AUROC - 768 Image Size": ("image_AUROC", "768"),
            "Pixel AUROC - 768 Image Size": ("pixel_AUROC", "768"),
            "Image AUROC - 256 Image Size": ("image_AUROC", "256"),
            "Pixel AUROC - 256 Image Size": ("pixel_AUROC", "256"),
        },
    ),
    Readme("ganomaly", {"": ("GANomaly", "")}),
    Readme("dinomaly", {"Dinomaly": ("Dinomaly", "")}),
    Readme("l2bt", {"L2BT": ("L2BT", "")}),
    Readme("uninet", {"": ("UniNet", "")}),  # its tables have no label column
    # "Currently, the difference between ICPR and JIMS code is only the adapt_cls_features" (README).
    Readme(
        "supersimplenet",
        {"ICPR": ("ICPR", "adapt_cls_features=True"), "JIMS": ("JIMS", "adapt_cls_features=False")},
        layout="metrics",
        sections={},
        columns={"AUROC (ICPR)": ("image_AUROC", "ICPR"), "AUROC (JIMS)": ("image_AUROC", "JIMS")},
    ),
    Readme(
        "mh_patchcore",
        {"": ("MH-PatchCore", "")},
        layout="metrics",
        sections={},
        columns={"Image AUROC": ("image_AUROC", ""), "Pixel AUROC": ("pixel_AUROC", "")},
    ),
    Readme(
        "anomalyvfm",
        {"": ("AnomalyVFM", "")},
        layout="metrics",
        sections={},
        percent=True,
        columns={"I-AUROC": ("image_AUROC", ""), "P-AUROC": ("pixel_AUROC", "")},
    ),
]
NUMBER = re.compile(r"\d+(\.\d+)?")


def category(name: str) -> str:
    return name.strip().lower().replace(" ", "_")  # "Metal Nut" -> metal_nut


def _cells(line: str) -> list[str]:
    return [c.strip().strip("*`").strip() for c in line.strip().strip("|").split("|")]


def _value(text: str, percent: bool) -> str | None:
    if not NUMBER.fullmatch(text):
        return None
    return str(Decimal(text) / 100) if percent else text  # as published, or the percentage as a fraction


def parse(spec: Readme, readme: Path) -> tuple[list[tuple[str, ...]], list[str]]:
    """(rows, the headings of the tables they came from) of one README's MVTec AD tables."""
    rows, used = [], []
    heading, metric, key, header, mvtec = "", None, None, None, True
    for line in readme.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            level, _, text = line.partition(" ")
            if level == "##":  # a dataset section: VisA tables share the MVTec headings (l2bt)
                mvtec = "visa" not in text.lower()
            heading, header = text.strip(), None
            metric, key = spec.sections.get(heading, (None, None))
            continue
        if not mvtec or not line.startswith("|"):
            continue
        cells = _cells(line)
        if header is None:
            header = cells
            continue
        if set(line.replace("|", "").strip()) <= set("-: "):
            continue  # the |---| line
        found = _table_row(spec, cells, header, metric, key)
        rows += found
        if found and heading not in used:
            used.append(heading)
    return rows, used


def _table_row(spec: Readme, cells, header, metric, key) -> list[tuple[str, ...]]:
    out = []
    if spec.layout == "rows" and metric is not None:
        labelled = header[0] not in ("Avg", "Average")  # uninet's tables have no label column
        label = key if key is not None else (cells[0] if labelled else "")
        if key is None and label not in spec.variants:
            return out
        variant, match = spec.variants[label]
        names, values = (header[1:], cells[1:]) if labelled else (header, cells)
        for name, text in zip(names, values, strict=True):
            value = _value(text, spec.percent)
            if category(name) in CATEGORIES and value is not None:
                out.append((spec.model, variant, match, category(name), metric, value))
    elif spec.layout == "transposed" and metric is not None:
        if category(cells[0]) not in CATEGORIES:
            return out
        for name, text in zip(header[1:], cells[1:], strict=True):
            value = _value(text, spec.percent)
            if name in spec.variants and value is not None:
                variant, match = spec.variants[name]
                out.append((spec.model, variant, match, category(cells[0]), metric, value))
    elif spec.layout == "metrics":
        if category(cells[0]) not in CATEGORIES:
            return out
        for name, text in zip(header[1:], cells[1:], strict=True):
            value = _value(text, spec.percent)
            if name in spec.columns and value is not None:
                column_metric, label = spec.columns[name]
                variant, match = spec.variants[label]
                out.append((spec.model, variant, match, category(cells[0]), column_metric, value))
    return out


def _settings(readme: Path) -> str:
    """The README's own paragraph on how its numbers were gathered, if it has one."""
    paragraph: list[str] = []
    for line in readme.read_text(encoding="utf-8").splitlines():
        text = line.strip().lstrip(">").strip()
        if paragraph and not text:
            break
        if paragraph or text.startswith(("All results gathered", "The following results were obtained")):
            paragraph.append(text)
    return " ".join(paragraph).rstrip(":")


def main(out: Path = OUT) -> None:
    rows: list[tuple[str, ...]] = []
    cited = []
    for spec in READMES:
        readme = MODELS / spec.model / "README.md"
        found, headings = parse(spec, readme)
        if not found:
            raise SystemExit(f"{readme}: no MVTec AD table rows parsed; has its layout changed?")
        rows += found
        tables = ", ".join(headings)
        if not any(r[4] == "pixel_AUROC" for r in found):
            tables += "; it has no pixel table"
        settings = _settings(readme)
        cited.append(
            f"#   {spec.model} rows: src/anomalib/models/image/{spec.model}/README.md ({tables})"
            + (f"\n#     {settings}" if settings else "")
        )
    parsed = {spec.model for spec in READMES}
    others = sorted(
        p.name for p in MODELS.iterdir() if p.is_dir() and not p.name.startswith("__") and p.name not in parsed
    )
    head = f"""# anomalib: the benchmark tables published in anomalib's model READMEs (MVTec AD).
# Source: github.com/open-edge-platform/anomalib, release {version("anomalib")}:
{chr(10).join(cited)}
# No per-category MVTec AD AUROC table in the README (so no rows): {", ".join(others)}.
# Settings: anomalib's defaults for each model unless the variant says otherwise (256 px for most;
# Patchcore layers 2+3, 10% coreset; EfficientAd batch size 1); seeds and schedules as quoted above.
# Values as published (mostly three decimals; AnomalyVFM's percentages divided by 100); Avg columns left out.
# Generated by scripts/make_references.py from the installed package; do not edit by hand.
# The match column picks the row set for a model entry: every key=value must hold for its config.
model,variant,match,category,metric,value
"""
    bad = [r for r in rows if any("," in cell for cell in r)]
    if bad:
        raise SystemExit(f"a comma in a field would break the csv: {bad[0]}")
    out.write_text(head + "".join(",".join(r) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} values for {len(READMES)} models to {out}")


if __name__ == "__main__":
    main()
