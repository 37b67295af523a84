"""Where weights are looked for, and whether the network can reach their hosts.

Shared by the model specs (``adrun.models``), ``preflight`` and ``fetch``. Nothing here
downloads. The only network access is a TCP connect with a short timeout, so a machine
without internet gets its answer in seconds, not after the hub client's retries (about a
minute per file). docs/offline.md says where each cache lives and why.
"""

from __future__ import annotations

import os
import threading
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

PROBE_TIMEOUT_S = 2.5
TRUE = {"1", "ON", "YES", "TRUE"}
# The image files torchvision's ImageFolder and anomalib's PredictDataset read (through PIL).
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class Check:
    """One thing a cell needs: ``detail`` is short (doctor's table), ``problems`` name the fixes."""

    ok: bool
    detail: str
    problems: tuple[str, ...] = ()


@dataclass
class Download:
    """One thing ``adrun fetch`` can download for a config, marked present or not."""

    kind: str  # backbone, teacher, imagenette, dataset
    name: str
    target: Path
    present: bool
    download: Callable[[], None]


# --------------------------------------------------------------------------- environment


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in TRUE


def hf_offline() -> bool:
    """``HF_HUB_OFFLINE=1``: the hub client reads only its cache; timm then cannot download."""
    return env_flag("HF_HUB_OFFLINE") or env_flag("TRANSFORMERS_OFFLINE")  # huggingface_hub honours both


def hf_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved from the environment now (as huggingface_hub does at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def torch_hub_dir() -> Path:
    if os.environ.get("TORCH_HOME"):
        return Path(os.environ["TORCH_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "torch" / "hub"


def anomalib_weights_dir() -> Path:
    """anomalib's ``pre_trained`` cache (``get_pretrained_weights_dir()``, which creates it)."""
    from anomalib.utils.path import get_pretrained_weights_dir

    return get_pretrained_weights_dir()


# --------------------------------------------------------------------------- network


_probed: dict[tuple[str, int], bool] = {}


def _target(url: str) -> tuple[str, int]:
    """Host and port a download of ``url`` connects to first: the proxy's, when one is set."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        p = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        return p.hostname or "", p.port or 80
    return host, parts.port or (443 if parts.scheme == "https" else 80)


def reachable(*urls: str) -> dict[str, bool]:
    """Whether each URL's host (or proxy) accepts a TCP connection, probing all at once.

    Each probe runs in a daemon thread and is given up after ``PROBE_TIMEOUT_S``:
    ``create_connection``'s timeout does not cover a DNS lookup that hangs.
    ``ADRUN_OFFLINE=1`` skips probing: everything counts as unreachable.
    """
    if env_flag("ADRUN_OFFLINE"):
        return {url: False for url in urls}
    targets = {url: _target(url) for url in urls}
    pending = {t for t in targets.values() if t not in _probed}
    results: dict[tuple[str, int], bool] = {}

    def probe(target: tuple[str, int]) -> None:
        import socket

        try:
            socket.create_connection(target, timeout=PROBE_TIMEOUT_S).close()
            results[target] = True
        except OSError:
            results[target] = False

    threads = [threading.Thread(target=probe, args=(t,), daemon=True) for t in pending]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(PROBE_TIMEOUT_S + 0.5)
    for target in pending:
        _probed[target] = results.get(target, False)
    return {url: _probed[target] for url, target in targets.items()}


def fetch_hint(source: str | None) -> str:
    config = source or "CONFIG"
    return f"or run `adrun fetch {config}` on a machine with internet and copy the caches here (docs/offline.md)"


# --------------------------------------------------------------------------- timm backbones


def hf_cached(backbone: str) -> str | None:
    """The cached file timm would load for ``backbone``'s pretrained weights, or None."""
    cache = hf_cache_dir()
    # An empty cache holds no backbone, whatever its tag: skip importing timm (seconds on 2 cores).
    if not cache.is_dir() or not any(cache.glob("models--*")):
        return None
    from huggingface_hub import try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(backbone)
    if cfg is None or not cfg.hf_hub_id:
        return None
    repo, _, revision = cfg.hf_hub_id.partition("@")
    names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
    for name in names:
        found = try_to_load_from_cache(repo, name, cache_dir=cache, revision=revision or None)
        if isinstance(found, str):
            return found
    return None
