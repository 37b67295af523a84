"""DRAEM (anomalib's ``Draem``): a reconstructive plus a discriminative network trained on synthetic anomalies.

Its anomalies are Perlin-noise masks filled from texture images (the Describable
Textures Dataset, ``dtd_dir``). anomalib downloads DTD from its constructor whenever
``dtd_dir`` is not an existing folder; adrun never lets it: preflight refuses a missing
folder, ``adrun fetch`` downloads DTD there on request, and ``dtd_dir: null`` runs with
Perlin noise alone (an empty folder adrun makes under the experiment folder, which
anomalib accepts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from adrun.checks import Check, Download
from adrun.models import zoo

DTD_URL = "https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz"


class DraemConfig(zoo.SizeFloor):
    name: Literal["draem"]
    # A folder of texture images (any nesting), e.g. the extracted DTD; null: Perlin noise only.
    dtd_dir: str | None = "./datasets/dtd"
    enable_sspcab: bool = False
    sspcab_lambda: float = Field(0.1, ge=0)
    beta: list[float] = Field(default_factory=lambda: [0.1, 1.0], min_length=2, max_length=2)


class DraemSpec(zoo.ZooSpec):
    name = "draem"
    anomalib_class = "anomalib.models.Draem"
    config = DraemConfig
    summary = "reconstruction + discrimination of synthetic anomalies (Zavrtanik et al. 2021)"
    weights = "none (trained from scratch); textures: dtd_dir (DTD, optional)"
    offline = "yes (dtd_dir: FOLDER, or null for Perlin noise only)"

    def kwargs(self, cfg: DraemConfig, exp_dir: Path) -> dict[str, Any]:
        out = super().kwargs(cfg, exp_dir)
        out["beta"] = tuple(cfg.beta)
        if cfg.dtd_dir is None:
            empty = exp_dir / "draem-no-textures"  # adrun's own folder; empty = Perlin noise only
            empty.mkdir(parents=True, exist_ok=True)
            out["dtd_dir"] = str(empty)
        elif not Path(cfg.dtd_dir).is_dir():  # preflight refuses this; never let anomalib download
            from adrun.errors import DataError

            raise DataError(f"dtd_dir {cfg.dtd_dir} is not a folder; run `adrun fetch` or set dtd_dir: null")
        return out

    def checks(self, cfg: DraemConfig, label: str, source: str | None) -> dict[str, Check]:
        if cfg.dtd_dir is None:
            return {"textures": Check(True, "none (Perlin noise)")}
        folder = Path(cfg.dtd_dir)
        if folder.is_dir():
            return {"textures": Check(True, "found")}
        from adrun import checks

        what = "is a file" if folder.exists() else "does not exist"
        return {
            "textures": Check(
                False,
                "missing",
                (
                    f"{label}: dtd_dir {folder} {what} (anomalib would download DTD into it); "
                    f"{checks.fetch_hint(source)}, or set dtd_dir: null (Perlin noise only) on that model entry",
                ),
            )
        }

    def downloads(self, cfg: DraemConfig) -> list[Download]:
        if cfg.dtd_dir is None:
            return []
        folder = Path(cfg.dtd_dir)

        def download() -> None:
            from anomalib.data.utils import download_and_extract
            from anomalib.models.image.draem.lightning_model import DTD_DOWNLOAD_INFO

            download_and_extract(folder, DTD_DOWNLOAD_INFO)

        return [Download("textures", "DTD", folder, folder.is_dir(), download)]

    def probe_urls(self) -> tuple[str, ...]:
        return (DTD_URL,)

    def sources(self, cfg: DraemConfig) -> dict[str, Any]:
        textures = "none (Perlin noise)" if cfg.dtd_dir is None else str(Path(cfg.dtd_dir).resolve())
        return {"textures": textures}


SPEC = DraemSpec()
