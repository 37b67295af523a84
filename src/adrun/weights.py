"""Local weight files: read a state dict, check that it fits, load it into a timm backbone.

Shared by the model specs' checks (before any cell runs) and their builds (load at
build time), so both report a bad file with the same one line. torch, timm and anomalib
are imported inside the functions: checks that need no file stay fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adrun.errors import WeightsError
from adrun.wording import plural

SUFFIXES = (".pth", ".pt", ".safetensors")
# Wrappers that training scripts put around a state dict ({"state_dict": {...}}).
WRAPPERS = ("state_dict", "model", "module")
# Key prefixes from DataParallel and from anomalib's own modules (a model checkpoint's
# feature extractor, or a saved TimmFeatureExtractor), stripped when all keys have one.
PREFIXES = (
    "module.",
    "model.feature_extractor.feature_extractor.",
    "feature_extractor.feature_extractor.",
    "feature_extractor.",
    "model.",
)


def read_state_dict(path: Path, what: str = "weights file") -> dict[str, Any]:
    """A ``{name: tensor}`` dict from a .pth/.pt (``weights_only``) or .safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{what} {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            import torch

            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, or not a tensor file at all
        raise WeightsError(
            f"{what} {path} cannot be read ({type(exc).__name__}: {_first_line(exc)}); it is truncated or not a "
            "state dict: save it again with torch.save(model.state_dict(), path)"
        ) from None
    return _unwrap(state, path, what)


def _unwrap(state: Any, path: Path, what: str) -> dict[str, Any]:
    import torch

    while isinstance(state, Mapping) and len(state) == 1 and next(iter(state)) in WRAPPERS:
        state = next(iter(state.values()))
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(
            f"{what} {path} holds no state dict (a mapping of names to tensors); "
            "save one with torch.save(model.state_dict(), path)"
        )
    state = dict(state)
    for prefix in PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:160] if text else "no message"


def state_diff(state: Mapping[str, Any], expected: Mapping[str, Any], optional: tuple[str, ...] = ()) -> list[str]:
    """What keeps ``state`` from loading into a module with ``expected`` (name -> tensor) entries."""

    def is_optional(key: str) -> bool:
        return any(key == o or key.startswith(o + ".") for o in optional)

    missing = [k for k in expected if k not in state and not is_optional(k)]
    unexpected = [k for k in state if k not in expected and not is_optional(k)]
    shapes = [
        f"{k} (file {list(state[k].shape)}, model {list(expected[k].shape)})"
        for k in expected
        if k in state and not is_optional(k) and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    parts = []
    if missing:
        parts.append(f"{plural(len(missing), 'missing key')} (e.g. {', '.join(missing[:2])})")
    if unexpected:
        parts.append(f"{plural(len(unexpected), 'unexpected key')} (e.g. {', '.join(unexpected[:2])})")
    if shapes:
        parts.append(f"{plural(len(shapes), 'shape mismatch', 'shape mismatches')} (e.g. {shapes[0]})")
    return parts


# --------------------------------------------------------------------------- backbone


def _timm_model(backbone: str, **kwargs):
    import timm

    try:
        return timm.create_model(backbone, pretrained=False, **kwargs)
    except RuntimeError as exc:  # "Unknown model (...)"
        raise WeightsError(f"backbone {backbone!r}: {_first_line(exc)}; use a timm model name") from None


def _classifier(model) -> tuple[str, ...]:
    name = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    return (name,) if isinstance(name, str) else tuple(name)


def feature_indices(backbone: str, layers: list[str]) -> list[int]:
    """timm ``out_indices`` for layer names, as anomalib's ``TimmFeatureExtractor`` maps them."""
    import torch

    with torch.device("meta"):
        net = _timm_model(backbone, features_only=True, exportable=True)
    names = [info["module"] for info in net.feature_info.info]
    return [names.index(layer) for layer in layers if layer in names]


def backbone_state(backbone: str, path: Path, out_indices: list[int] | None = None) -> tuple[str, dict]:
    """Read ``path`` and check it against timm's ``backbone``; returns (``"full"`` | ``"features"``, state).

    Accepted: the state dict of the whole timm model (``timm.create_model(name).state_dict()``,
    classifier optional, since features never use it), or that of its ``features_only`` net.
    Shapes are compared on the meta device, so no weights are allocated for the check.
    """
    import torch

    state = read_state_dict(path)
    with torch.device("meta"):
        full = _timm_model(backbone)
        problems = state_diff(state, full.state_dict(), optional=_classifier(full))
        if not problems:
            return "full", state
        if out_indices is not None:
            features = _timm_model(backbone, features_only=True, exportable=True, out_indices=out_indices)
            if not state_diff(state, features.state_dict()):
                return "features", state
    raise WeightsError(
        f"weights file {path} does not fit backbone {backbone}: {'; '.join(problems)}; "
        f"pass the state dict of timm.create_model({backbone!r}), or set backbone: to the file's architecture"
    )


def load_backbone(extractor, backbone: str, path: Path) -> None:
    """Load ``path`` into anomalib's ``TimmFeatureExtractor`` (its ``features_only`` timm net).

    A whole-model state dict goes through timm's own pretrained loader (state-dict
    override), which maps it onto the features net the same way a hub download is.
    """
    import timm
    import torch

    kind, state = backbone_state(backbone, path, list(extractor.idx))
    if kind == "features":
        extractor.feature_extractor.load_state_dict(state)
        return
    with torch.device("meta"):
        shapes = _timm_model(backbone).state_dict()
    # The classifier is dropped by the features net; fill it when the file has none (or another size).
    for key, value in shapes.items():
        if key not in state or tuple(state[key].shape) != tuple(value.shape):
            state[key] = torch.zeros(value.shape, dtype=value.dtype)
    net = timm.create_model(
        backbone,
        pretrained=True,
        pretrained_cfg_overlay={"state_dict": state},
        features_only=True,
        exportable=True,
        out_indices=list(extractor.idx),
    )
    extractor.feature_extractor = net
