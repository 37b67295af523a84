"""The keys, checks, downloads and provenance of a DINOv2 ViT encoder, shared by the models built on one.

anomalib's AnomalyDINO and Dinomaly build their encoder with
``TimmFeatureExtractor(encoder_name, pre_trained=True)`` and no flag to turn it off, so
timm fetches ``model.safetensors`` of ``timm/<encoder_name>.<tag>`` from the Hugging Face
hub: offline, the hub client retries for about a minute, then raises deep in a
traceback. adrun checks the cache before building and names the file; ``pre_trained:
false`` builds the ViT untrained (smoke quality), and ``weights: FILE`` loads a local
state dict of ``timm.create_model(encoder_name)`` with ``weights_only``, never through
anomalib's or timm's own loaders.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from adrun import checks
from adrun.checks import Check, Download
from adrun.errors import AdrunError, WeightsError
from adrun.models import zoo
from adrun.models.backbone import WeightsFile

if TYPE_CHECKING:
    from anomalib.metrics import Evaluator

OFFLINE = "with pre_trained: false (untrained ViT, smoke quality) or weights: FILE"
RANDOM_NOTE = (
    "uses an untrained {encoder} (pre_trained: false): fit for smoke tests only, not what {model} does "
    "with its DINOv2 weights."
)


class EncoderKeys(WeightsFile):
    # true: timm's DINOv2 weights from the Hugging Face cache (`adrun fetch` puts them there).
    # false: an untrained ViT, an explicit choice the record keeps (smoke runs only).
    pre_trained: bool = True
    # A local state dict (.pth/.pt/.safetensors) of timm.create_model(encoder_name): no hub at all.
    weights: Path | None = Field(None)


def hub_file(encoder: str) -> tuple[str, str, Path]:
    """(Hugging Face repo, file name, cache folder) timm loads ``encoder``'s pretrained weights from."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(encoder)
    if cfg is None or not cfg.hf_hub_id:
        raise WeightsError(f"timm has no pretrained weights on the Hugging Face hub for {encoder}")
    repo = cfg.hf_hub_id.partition("@")[0]
    # timm's load_state_dict_from_hf reads model.safetensors first (pytorch_model.bin only without it).
    name = cfg.hf_hub_filename or "model.safetensors"
    return repo, name, checks.hf_cache_dir() / f"models--{repo.replace('/', '--')}"


def encoder_state(encoder: str, path: Path) -> dict[str, Any]:
    """Read ``path`` and check that it is a state dict of ``timm.create_model(encoder)``; the state."""
    import timm
    import torch

    from adrun.weights import read_state_dict, state_diff

    state = read_state_dict(path)
    with torch.device("meta"):
        try:
            net = timm.create_model(encoder, pretrained=False, dynamic_img_size=True)
        except RuntimeError as exc:  # "Unknown model (...)"
            raise WeightsError(f"encoder_name {encoder!r} is not a timm model ({exc})") from None
        pretrained_cfg: dict[str, Any] = dict(getattr(net, "pretrained_cfg", None) or {})
        head = pretrained_cfg.get("classifier") or ()
        problems = state_diff(state, net.state_dict(), optional=(head,) if isinstance(head, str) else tuple(head))
    if problems:
        raise WeightsError(
            f"weights file {path} does not fit encoder {encoder}: {'; '.join(problems)}; "
            f"pass the state dict of timm.create_model({encoder!r}), or set encoder_name: to the file's architecture"
        )
    return state


def check(cfg: Any, label: str, source: str | None) -> Check:
    """Whether the encoder's weights are here: a file that fits, untrained by choice, or timm's cached file."""
    encoder = cfg.encoder_name
    if cfg.weights is not None:
        try:
            encoder_state(encoder, Path(cfg.weights))
        except AdrunError as exc:
            return Check(False, "bad file", (f"{label}: {exc}; set weights: on that model entry",))
        return Check(True, f"file {Path(cfg.weights).name}")
    if not cfg.pre_trained:
        return Check(True, "untrained (pre_trained: false)")
    try:
        repo, name, folder = hub_file(encoder)
    except WeightsError as exc:
        return Check(False, "no weights", (f"{label}: {exc}; set weights: FILE or pre_trained: false",))
    if checks.hf_cached(encoder):
        return Check(True, "cached")
    # No probe and no download: anomalib's loader would hang offline, and a DINOv2 file is 80-1200 MB.
    return Check(
        False,
        "missing",
        (
            f"{label}: {encoder}'s weights ({name} of Hugging Face repo {repo}) are not in {folder}; "
            f"run `adrun fetch {source or 'CONFIG'}` (timm downloads it there), or set weights: FILE "
            f"(the state dict of timm.create_model({encoder!r})) or pre_trained: false on that model entry",
        ),
    )


def downloads(cfg: Any) -> list[Download]:
    if not cfg.pre_trained or cfg.weights is not None:
        return []
    encoder = cfg.encoder_name
    from adrun.models import backbone

    return [
        Download(
            "backbone",
            encoder,
            checks.hf_cache_dir(),
            checks.hf_cached(encoder) is not None,
            lambda: backbone.download(encoder),
        )
    ]


def source(cfg: Any) -> str:
    """Where the encoder's weights come from, for the record."""
    if cfg.weights is not None:
        return f"file {Path(cfg.weights).resolve()}"
    if not cfg.pre_trained:
        return f"untrained {cfg.encoder_name} (pre_trained: false)"
    return f"timm pretrained {cfg.encoder_name} (Hugging Face cache)"


class VitSpec(zoo.ZooSpec):
    """A ZooSpec whose anomalib model holds a DINOv2 ``TimmFeatureExtractor`` at ``encoder_at``."""

    encoder_at: ClassVar[str]  # attribute path below the LightningModule, e.g. "model.feature_encoder"
    hard_coded_pretrained = True
    weights = "DINOv2 ViT from timm (Hugging Face cache), or weights: FILE"
    offline = OFFLINE

    def untrained(self, cfg: Any) -> bool:
        return not cfg.pre_trained or cfg.weights is not None

    def kwargs(self, cfg: Any, exp_dir: Path) -> dict[str, Any]:
        out = super().kwargs(cfg, exp_dir)
        out.pop("pre_trained", None)
        return out

    def build(self, cfg: Any, exp_dir: Path, evaluator: Evaluator):
        model = super().build(cfg, exp_dir, evaluator)
        if cfg.weights is not None:
            state = encoder_state(cfg.encoder_name, Path(cfg.weights))
            extractor = functools.reduce(getattr, self.encoder_at.split("."), model)
            # strict=False only for a classifier head the file may lack (the check allowed that alone).
            extractor.feature_extractor.load_state_dict(state, strict=False)
        return model

    def for_checkpoint(self, cfg: Any) -> Any:
        return cfg.model_copy(update={"pre_trained": False, "weights": None})

    def checks(self, cfg: Any, label: str, source: str | None) -> dict[str, Check]:
        return {"weights": check(cfg, label, source)}

    def downloads(self, cfg: Any) -> list[Download]:
        return downloads(cfg)

    def notes(self, cfg: Any) -> list[str]:
        if not cfg.pre_trained and cfg.weights is None:
            return [RANDOM_NOTE.format(encoder=cfg.encoder_name, model=self.anomalib_class.rpartition(".")[2])]
        return []

    def sources(self, cfg: Any) -> dict[str, Any]:
        return {"backbone": source(cfg)}
