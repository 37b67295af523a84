"""The keys, checks, downloads and provenance of a timm backbone, shared by every model that has one.

``backbone``, ``pre_trained`` and ``weights: FILE`` mean the same in every model entry,
so a spec mixes ``BackboneKeys`` into its config and calls the functions below.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator

from adrun import checks
from adrun.checks import Check, Download
from adrun.errors import AdrunError
from adrun.schema import ModelBase

OFFLINE = "with pre_trained: false or weights: FILE"
WEIGHTS = "timm pretrained backbone (Hugging Face cache), or weights: FILE"


class WeightsFile(ModelBase):
    """The rule for ``weights: FILE`` in every model entry that has one (timm backbones, ViT encoders).

    The subclass declares ``pre_trained`` before ``weights``.
    """

    @field_validator("weights", check_fields=False)
    @classmethod
    def _weights_file(cls, value, info: ValidationInfo):
        if value is None:
            return value
        if value.suffix not in (".pth", ".pt", ".safetensors"):
            raise ValueError("must be a .pth, .pt or .safetensors state dict file")
        # A file loaded into a network declared untrained would hide one of the two wishes.
        if info.data.get("pre_trained") is False:
            raise ValueError("contradicts pre_trained: false; drop one of the two")
        return value


class BackboneKeys(WeightsFile):
    # The torchvision weights papers used are "<arch>.tv_in1k"; timm's bare name resolves elsewhere.
    backbone: str = "wide_resnet50_2"
    # true: timm's pretrained weights from the Hugging Face cache (downloaded when
    # missing and online). false: untrained backbone, an explicit choice the record keeps.
    pre_trained: bool = True
    # A local state dict (.pth/.pt/.safetensors) of the timm backbone: no hub access at
    # all, for machines without internet. Overrides the cache; see docs/offline.md.
    weights: Path | None = Field(None)


def check(cfg: BackboneKeys, layers: list[str], label: str, source: str | None) -> Check:
    """Whether the backbone's weights are there: a readable file that fits, the cache, or a reachable hub."""
    if cfg.weights is not None:
        from adrun import weights

        try:
            indices = weights.feature_indices(cfg.backbone, list(layers))
            weights.backbone_state(cfg.backbone, Path(cfg.weights), indices)
        except AdrunError as exc:
            return Check(False, "bad file", (f"{label}: {exc}; set weights: on that model entry",))
        return Check(True, f"file {Path(cfg.weights).name}")
    if not cfg.pre_trained:
        return Check(True, "untrained (pre_trained: false)")
    if checks.hf_cached(cfg.backbone):
        return Check(True, "cached")
    fixes = (
        f"set weights: FILE (a local state dict) or pre_trained: false on that model entry, {checks.fetch_hint(source)}"
    )
    where = f"not in the Hugging Face cache {checks.hf_cache_dir()}"
    if checks.hf_offline():
        return Check(
            False,
            "missing",
            (
                f"{label}: timm's pretrained weights for {cfg.backbone} are {where} "
                f"and HF_HUB_OFFLINE=1 forbids downloading; {fixes}",
            ),
        )
    endpoint = checks.hf_endpoint()
    host = urlsplit(endpoint).hostname
    if checks.reachable(endpoint)[endpoint]:
        return Check(True, f"download ({host})")
    return Check(
        False,
        "missing",
        (
            f"{label}: timm's pretrained weights for {cfg.backbone} are {where} "
            f"and {host} is unreachable (no network?); {fixes}",
        ),
    )


def download(name: str) -> None:
    import timm

    # timm's own loader: resolves the tag, downloads into the hub cache, checks the file loads.
    timm.create_model(name, pretrained=True)


def downloads(cfg: BackboneKeys) -> list[Download]:
    if not cfg.pre_trained or cfg.weights is not None:
        return []
    name = cfg.backbone
    return [
        Download("backbone", name, checks.hf_cache_dir(), checks.hf_cached(name) is not None, lambda: download(name))
    ]


def source(cfg: BackboneKeys) -> str:
    """Where the backbone's weights come from, for the record."""
    if cfg.weights is not None:
        return f"file {Path(cfg.weights).resolve()}"
    if not cfg.pre_trained:
        return "untrained (pre_trained: false)"
    return f"timm pretrained {cfg.backbone} (Hugging Face cache or download)"
