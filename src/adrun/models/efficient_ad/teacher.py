"""EfficientAd's teacher from a local file: check that it fits the model size, then load it."""

from __future__ import annotations

from pathlib import Path

import torch

from adrun.errors import WeightsError
from adrun.weights import read_state_dict, state_diff


def _teacher(model_size: str, out_channels: int, padding: bool = False):
    from anomalib.models.image.efficient_ad.torch_model import (
        MediumPatchDescriptionNetwork,
        SmallPatchDescriptionNetwork,
    )

    cls = MediumPatchDescriptionNetwork if model_size == "medium" else SmallPatchDescriptionNetwork
    return cls(out_channels=out_channels, padding=padding)


def teacher_state(path: Path, model_size: str, out_channels: int = 384) -> dict:
    """Read a teacher file and check it fits EfficientAd's ``model_size`` teacher; the state on success."""
    state = read_state_dict(path, what="teacher file")
    with torch.device("meta"):
        problems = state_diff(state, _teacher(model_size, out_channels).state_dict())
        if not problems:
            return state
        other = "medium" if model_size == "small" else "small"
        fits_other = not state_diff(state, _teacher(other, out_channels).state_dict())
    hint = (
        f"it is a {other} teacher: set model_size: {other}, or use pretrained_teacher_{model_size}.pth"
        if fits_other
        else f"use anomalib's pretrained_teacher_{model_size}.pth (teacher_out_channels 384)"
    )
    raise WeightsError(f"teacher file {path} does not fit model_size {model_size} ({'; '.join(problems)}): {hint}")


def load_teacher(
    teacher: torch.nn.Module, path: Path, device: torch.device | str = "cpu", model_size: str = "small"
) -> None:
    """Load a teacher state dict from ``path``, turning every mismatch into a ``WeightsError``."""
    state = teacher_state(Path(path), model_size, _out_channels(teacher))
    teacher.load_state_dict(state)
    teacher.to(device)


def _out_channels(teacher: torch.nn.Module) -> int:
    # The last conv of either PDN size produces the teacher's output channels.
    convs = [m for m in teacher.modules() if isinstance(m, torch.nn.Conv2d)]
    return convs[-1].out_channels
