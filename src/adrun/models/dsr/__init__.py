"""DSR (anomalib's ``Dsr``): a dual subspace re-projection network over a pretrained VQ model.

DSR does not train its discrete (VQ-VAE) model: anomalib downloads a pretrained one
(``vq_model_pretrained_128_4096.pckl``, from a zip on GitHub) into its cache when training
starts and loads it there. adrun never lets a run download it: ``vq_model: auto`` reads the
file from anomalib's cache, where ``adrun fetch`` puts it on request, ``vq_model: FILE``
reads a local copy, and preflight refuses a missing or unreadable file naming it. adrun
loads it itself with ``weights_only=True`` (anomalib 2.7 does too, so the published file is
a plain state dict); a file that needs unpickling is refused, never unpickled.
``vq_model: random`` keeps the VQ model at its random init: the pipeline runs offline, at
smoke quality only. Its anomalies come from Perlin noise and its own latent-space
sampling: DSR reads no texture images, so there is no texture folder to give.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from adrun import checks
from adrun.checks import Check, Download
from adrun.errors import AdrunError, WeightsError
from adrun.models import zoo

if TYPE_CHECKING:
    from anomalib.metrics import Evaluator

VQ_FILE = "vq_model_pretrained_128_4096.pckl"
# anomalib 2.7's dsr/lightning_model.py WEIGHTS_DOWNLOAD_INFO (a zip holding VQ_FILE).
VQ_URL = "https://github.com/open-edge-platform/anomalib/releases/download/dsr_pretrained_weights/dsr_vq_model_pretrained.zip"


class DsrConfig(zoo.SizeFloor):
    name: Literal["dsr"]
    # auto: VQ_FILE in anomalib's cache (`adrun fetch` downloads it; a run never does);
    # random: an untrained VQ model (smoke runs only); or the path of a local VQ_FILE.
    vq_model: str = "auto"
    latent_anomaly_strength: float = Field(0.2, ge=0)
    upsampling_train_ratio: float = Field(0.7, gt=0, le=1)


def cached_file() -> Path:
    """Where anomalib's own download puts DSR's VQ model."""
    return checks.anomalib_weights_dir() / "dsr" / VQ_FILE


def vq_file(cfg: DsrConfig) -> Path | None:
    """The VQ model file this entry reads, or None for a random one."""
    if cfg.vq_model == "random":
        return None
    return cached_file() if cfg.vq_model == "auto" else Path(cfg.vq_model)


def vq_state(path: Path) -> dict:
    """The VQ model's state dict from ``path`` (weights_only), checked to fit anomalib's DiscreteLatentModel."""
    import torch
    from anomalib.models.image.dsr.torch_model import DiscreteLatentModel

    from adrun.weights import read_state_dict, state_diff

    loaded = read_state_dict(path, "DSR's VQ model file")
    with torch.device("meta"):
        expected = DiscreteLatentModel(
            num_hiddens=128, num_residual_layers=2, num_residual_hiddens=64, num_embeddings=4096, embedding_dim=128
        ).state_dict()
    problems = state_diff(loaded, expected)
    if problems:
        raise WeightsError(
            f"DSR's VQ model file {path} does not fit anomalib's DiscreteLatentModel: {'; '.join(problems)}; "
            f"pass anomalib's {VQ_FILE}"
        )
    return loaded


class DsrSpec(zoo.ZooSpec):
    name = "dsr"
    anomalib_class = "anomalib.models.Dsr"
    config = DsrConfig
    summary = "dual subspace re-projection over a pretrained VQ model (Zavrtanik et al. 2022)"
    weights = f"pretrained VQ model ({VQ_FILE}, anomalib cache or vq_model: FILE, loaded weights_only)"
    offline = "with vq_model: FILE (or random, smoke only)"

    def lightning_class(self) -> type[Any]:
        from adrun.models.dsr.lightning import AdrunDsr

        return AdrunDsr

    def build(self, cfg: DsrConfig, exp_dir: Path, evaluator: Evaluator):
        model = super().build(cfg, exp_dir, evaluator)
        path = vq_file(cfg)
        # Read now, so a bad file fails the build, not the first training step.
        model.vq_state = None if path is None else vq_state(path)
        return model

    def for_checkpoint(self, cfg: DsrConfig) -> DsrConfig:
        # The checkpoint holds the VQ model's weights: build it without the file.
        return cfg.model_copy(update={"vq_model": "random"})

    def checks(self, cfg: DsrConfig, label: str, source: str | None) -> dict[str, Check]:
        path = vq_file(cfg)
        if path is None:
            return {"vq_model": Check(True, "random (smoke only)")}
        if cfg.vq_model == "auto" and not path.is_file():
            return {
                "vq_model": Check(
                    False,
                    "missing",
                    (
                        f"{label}: DSR's pretrained VQ model {VQ_FILE} is not in anomalib's cache {path.parent} "
                        f"(anomalib would download it from {VQ_URL}); {checks.fetch_hint(source)}, "
                        "or set vq_model: FILE, or vq_model: random for smoke runs only, on that model entry",
                    ),
                )
            }
        try:
            vq_state(path)
        except AdrunError as exc:
            unpickle = "adrun reads it with weights_only=True and never unpickles; " if path.is_file() else ""
            return {
                "vq_model": Check(
                    False,
                    "bad file",
                    (f"{label}: {exc}; {unpickle}set vq_model: on that model entry",),
                )
            }
        return {"vq_model": Check(True, "cached" if cfg.vq_model == "auto" else f"file {path.name}")}

    def notes(self, cfg: DsrConfig) -> list[str]:
        if cfg.vq_model == "random":
            return [
                "uses a random VQ model (vq_model: random): fit for smoke tests only, not what DSR does "
                "with its pretrained one."
            ]
        return []

    def downloads(self, cfg: DsrConfig) -> list[Download]:
        if cfg.vq_model != "auto":
            return []
        path = cached_file()

        def download() -> None:
            from anomalib.data.utils import download_and_extract
            from anomalib.models.image.dsr.lightning_model import WEIGHTS_DOWNLOAD_INFO

            # anomalib's own download: checks the zip's sha256, then extracts VQ_FILE.
            download_and_extract(path.parent, WEIGHTS_DOWNLOAD_INFO)

        return [Download("vq_model", VQ_FILE, path.parent, path.is_file(), download)]

    def environment(self) -> list[tuple[str, str]]:
        path = cached_file()
        return [("anomalib cache (DSR VQ model)", f"{path} ({'cached' if path.is_file() else 'not cached'})")]

    def probe_urls(self) -> tuple[str, ...]:
        return (VQ_URL,)

    def sources(self, cfg: DsrConfig) -> dict[str, Any]:
        path = vq_file(cfg)
        if path is None:
            return {"vq_model": "random (smoke only)"}
        return {"vq_model": f"file {path.resolve()} (weights_only)"}


SPEC = DsrSpec()
