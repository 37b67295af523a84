"""WinCLIP (anomalib's ``WinClip``): zero-/few-shot scores from CLIP's window, patch and text embeddings.

No training: anomalib's Engine only validates it. The CLIP model is open_clip's
``ViT-B-16-plus-240`` with the ``laion400m_e31`` weights, which open_clip downloads from
github.com to ``~/.cache/clip/vit_b_16_plus_240-laion400m_e31-8fb26589.pt`` (the file
name anomalib's loader looks for) and unpickles there. adrun always builds CLIP untrained,
then loads that cached file (or ``weights: FILE``) itself with ``weights_only``; with
``pre_trained: false`` it stays random (smoke quality). ``k_shot: 0`` is zero-shot
(prompts from the category name); ``k_shot: N`` takes N normal training images as
references. Inputs are always 240 px, as anomalib's pre-processor fixes them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from adrun.checks import Check, Download
from adrun.errors import AdrunError, WeightsError
from adrun.models import vit, zoo

if TYPE_CHECKING:
    from anomalib.metrics import Evaluator

# anomalib's winclip/torch_model.py BACKBONE and PRETRAINED; open_clip 2.24's pretrained table.
MODEL, TAG = "ViT-B-16-plus-240", "laion400m_e31"
URL = "https://github.com/mlfoundations/open_clip/releases/download/v0.2-weights/vit_b_16_plus_240-laion400m_e31-8fb26589.pt"
FILE = URL.rpartition("/")[2]
GRID = 15  # 240 px / 16 px patches
SIZE = 240  # anomalib's configure_pre_processor ignores image_size and resizes to 240


def cache_dir() -> Path:
    """open_clip's download folder (``download_pretrained_from_url``'s default)."""
    return Path("~/.cache/clip").expanduser()


class WinClipConfig(vit.EncoderKeys):
    name: Literal["winclip"]
    # None: the dataset's category name (anomalib's fallback: "object").
    class_name: str | None = None
    k_shot: int = Field(0, ge=0)  # 0: zero-shot
    # Window sizes in patches of CLIP's 15 x 15 grid. Each window is one more pass of the
    # vision tower per image (scale 2: 196 windows; 3: 169), which is WinCLIP's CPU cost.
    scales: list[int] = Field(default_factory=lambda: [2, 3], min_length=1)
    # A folder of normal reference images for k_shot > 0 (None: the training images).
    few_shot_source: Path | None = None

    @field_validator("scales")
    @classmethod
    def _on_the_grid(cls, value):
        if any(not 1 <= scale <= GRID for scale in value):
            raise ValueError(f"each scale must be between 1 and {GRID} (patches of CLIP's {GRID} x {GRID} grid)")
        return value

    @field_validator("image_size")
    @classmethod
    def _fixed(cls, value):
        if value is not None and value != SIZE:
            raise ValueError(f"WinCLIP runs at {SIZE} px only (anomalib fixes its input size); drop image_size")
        return value


class WinClipSpec(zoo.ZooSpec):
    name = "winclip"
    anomalib_class = "anomalib.models.WinClip"
    config = WinClipConfig
    summary = "zero-/few-shot CLIP windows and prompts (Jeong et al. 2023); no training"
    image_size = SIZE
    weights = f"open_clip {MODEL} ({TAG}): {FILE} in ~/.cache/clip, or weights: FILE"
    offline = "with pre_trained: false (random CLIP, smoke quality) or weights: FILE; needs open_clip_torch"

    def kwargs(self, cfg: Any, exp_dir: Path) -> dict[str, Any]:
        out = super().kwargs(cfg, exp_dir)
        out["scales"] = tuple(cfg.scales)
        return out

    def pre_processor(self, cls: type[Any], size: int) -> Any:
        return cls.configure_pre_processor()

    def building(self, cfg: Any) -> contextlib.AbstractContextManager:
        return untrained_clip()

    def build(self, cfg: Any, exp_dir: Path, evaluator: Evaluator):
        model = super().build(cfg, exp_dir, evaluator)
        path = weights_file(cfg)
        if path is not None:
            model.model.clip.load_state_dict(clip_state(path))
        return model

    def for_checkpoint(self, cfg: Any) -> Any:
        return cfg.model_copy(update={"pre_trained": False, "weights": None})

    def cell_problems(self, cell: Any) -> list[str]:
        return []  # it never trains: anomalib's Engine skips fit for zero- and few-shot models

    def checks(self, cfg: Any, label: str, source: str | None) -> dict[str, Check]:
        return {"weights": _check(cfg, label, source)}

    def notes(self, cfg: Any) -> list[str]:
        if not cfg.pre_trained:
            return [
                f"uses a random {MODEL} (pre_trained: false): fit for smoke tests only, not what WinCLIP does "
                "with CLIP's weights."
            ]
        return []

    def downloads(self, cfg: Any) -> list[Download]:
        if not cfg.pre_trained or cfg.weights is not None:
            return []
        folder = cache_dir()
        return [Download("clip", FILE, folder, (folder / FILE).is_file(), lambda: _download(folder))]

    def environment(self) -> list[tuple[str, str]]:
        folder = cache_dir()
        return [("open_clip cache (WinCLIP)", f"{folder} ({FILE if (folder / FILE).is_file() else 'not cached'})")]

    def probe_urls(self) -> tuple[str, ...]:
        return (URL,)

    def sources(self, cfg: Any) -> dict[str, Any]:
        if cfg.weights is not None:
            return {"clip": f"file {Path(cfg.weights).resolve()}"}
        if not cfg.pre_trained:
            return {"clip": f"random {MODEL} (pre_trained: false)"}
        return {"clip": f"open_clip {MODEL} {TAG}, file {(cache_dir() / FILE).resolve()}"}


SPEC = WinClipSpec()


def weights_file(cfg: Any) -> Path | None:
    """The file adrun loads into CLIP: ``weights:``, open_clip's cached file, or None (random)."""
    if cfg.weights is not None:
        return Path(cfg.weights)
    return cache_dir() / FILE if cfg.pre_trained else None


@contextlib.contextmanager
def untrained_clip() -> Iterator[None]:
    """anomalib's ``open_clip.create_model_and_transforms`` builds CLIP without weights: no download, no unpickling."""
    import open_clip

    create = open_clip.create_model_and_transforms

    def create_untrained(*args, **kwargs):
        kwargs["pretrained"] = None
        return create(*args, **kwargs)

    open_clip.create_model_and_transforms = create_untrained
    try:
        yield
    finally:
        open_clip.create_model_and_transforms = create


def clip_state(path: Path) -> dict[str, Any]:
    """Read ``path`` (weights_only) and check it fits open_clip's ``ViT-B-16-plus-240``; the state."""
    import open_clip
    import torch

    from adrun.weights import read_state_dict, state_diff

    state = read_state_dict(path)
    with torch.device("meta"):
        expected = open_clip.create_model(MODEL, pretrained=None, device="meta").state_dict()
    problems = state_diff(state, expected)
    if problems:
        raise WeightsError(
            f"weights file {path} does not fit open_clip's {MODEL}: {'; '.join(problems)}; "
            f"pass {FILE} or the state dict of open_clip.create_model({MODEL!r})"
        )
    return state


def _check(cfg: Any, label: str, source: str | None) -> Check:
    import importlib.util

    if importlib.util.find_spec("open_clip") is None:
        return Check(
            False,
            "no open_clip",
            (f"{label}: WinCLIP needs open_clip, which is not installed; pip install 'open-clip-torch>=2.23,<2.26.1'",),
        )
    if cfg.weights is not None:
        try:
            clip_state(Path(cfg.weights))
        except AdrunError as exc:
            return Check(False, "bad file", (f"{label}: {exc}; set weights: on that model entry",))
        return Check(True, f"file {Path(cfg.weights).name}")
    if not cfg.pre_trained:
        return Check(True, "random (pre_trained: false)")
    if (cache_dir() / FILE).is_file():
        return Check(True, "cached")
    # No probe and no download here: open_clip would fetch 800 MB from github.com inside the build.
    return Check(
        False,
        "missing",
        (
            f"{label}: WinCLIP's CLIP weights {FILE} are not in {cache_dir()}; run `adrun fetch "
            f"{source or 'CONFIG'}` (open_clip downloads {URL} there), or set weights: FILE or pre_trained: false "
            "on that model entry",
        ),
    )


def _download(folder: Path) -> None:
    from open_clip.pretrained import download_pretrained_from_url

    # open_clip's own download: checks the file's sha256 prefix (8fb26589) from its name.
    download_pretrained_from_url(URL, cache_dir=str(folder))
