"""Check every cell before the first one runs: dataset, backbone weights, EfficientAd's teacher and imagenette.

The same checks feed ``require`` (one error, one line per missing thing, each naming
its fixes) and ``adrun doctor``'s table. Nothing here downloads. The only network
access is a TCP connect with a short timeout, so a machine without internet gets its
answer in seconds, not after the hub client's retries (about a minute per file).
Where weights are looked for, and why, is in docs/offline.md.
"""

from __future__ import annotations

import os
import threading
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from adrun import data
from adrun.config import Cell, EfficientAdConfig, Experiment, PatchcoreConfig, expand, experiment_dir
from adrun.errors import AdrunError, DataError, WeightsError

# Where the downloads come from (anomalib 2.7's WEIGHTS_DOWNLOAD_INFO and
# IMAGENETTE_DOWNLOAD_INFO; timm's hub). Only the hosts matter here: they are probed.
TEACHER_URL = "https://github.com/open-edge-platform/anomalib/releases/download/efficientad_pretrained_weights/"
IMAGENETTE_URL = "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2.tgz"
PROBE_TIMEOUT_S = 2.5
# torchvision's ImageFolder (what EfficientAd reads imagenet_dir with) accepts these.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"}
TRUE = {"1", "ON", "YES", "TRUE"}


@dataclass(frozen=True)
class Check:
    """One thing a cell needs: ``detail`` is short (doctor's table), ``problems`` name the fixes."""

    ok: bool
    detail: str
    problems: tuple[str, ...] = ()


@dataclass
class CellReport:
    label: str
    category: str
    model: str
    checks: dict[str, Check] = field(default_factory=dict)  # dataset, weights, teacher, imagenette

    @property
    def ready(self) -> bool:
        return all(c.ok for c in self.checks.values())


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


def teacher_dir() -> Path:
    """anomalib's folder for EfficientAd's teachers (``get_pretrained_weights_dir()``, which creates it)."""
    from anomalib.utils.path import get_pretrained_weights_dir

    return get_pretrained_weights_dir() / "efficientad_pretrained_weights"


def torch_hub_dir() -> Path:
    if os.environ.get("TORCH_HOME"):
        return Path(os.environ["TORCH_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "torch" / "hub"


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


# --------------------------------------------------------------------------- backbone


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


def _backbone(model: PatchcoreConfig, label: str, source: str | None) -> Check:
    if model.weights is not None:
        from adrun import weights

        try:
            indices = weights.feature_indices(model.backbone, list(model.layers))
            weights.backbone_state(model.backbone, Path(model.weights), indices)
        except AdrunError as exc:
            return Check(False, "bad file", (f"{label}: {exc}; set weights: on that model entry",))
        return Check(True, f"file {Path(model.weights).name}")
    if not model.pre_trained:
        return Check(True, "untrained (pre_trained: false)")
    if hf_cached(model.backbone):
        return Check(True, "cached")
    fixes = (f"set weights: FILE (a local state dict) or pre_trained: false on that model entry, "
             f"{fetch_hint(source)}")
    where = f"not in the Hugging Face cache {hf_cache_dir()}"
    if hf_offline():
        return Check(False, "missing", (f"{label}: timm's pretrained weights for {model.backbone} are {where} "
                                        f"and HF_HUB_OFFLINE=1 forbids downloading; {fixes}",))
    host = urlsplit(hf_endpoint()).hostname
    if reachable(hf_endpoint())[hf_endpoint()]:
        return Check(True, f"download ({host})")
    return Check(False, "missing", (f"{label}: timm's pretrained weights for {model.backbone} are {where} "
                                    f"and {host} is unreachable (no network?); {fixes}",))


# --------------------------------------------------------------------------- EfficientAd


def _teacher(model: EfficientAdConfig, label: str, source: str | None) -> Check:
    if model.teacher == "random":
        return Check(True, "random (smoke only)")
    if model.teacher != "auto":
        from adrun.weights import teacher_state

        try:
            teacher_state(Path(model.teacher), model.model_size, model.teacher_out_channels)
        except AdrunError as exc:
            return Check(False, "bad file", (f"{label}: {exc}; set teacher: on that model entry",))
        return Check(True, f"file {Path(model.teacher).name}")
    folder = teacher_dir()
    name = f"pretrained_teacher_{model.model_size}.pth"
    if (folder / name).is_file():
        return Check(True, "cached")
    if folder.is_dir():
        # anomalib downloads only when the folder is missing, so a partial one never heals.
        return Check(False, "incomplete", (f"{label}: {folder} exists without {name}; delete that folder so "
                                           "anomalib downloads it again, or set teacher: FILE on that model entry",))
    if reachable(TEACHER_URL)[TEACHER_URL]:
        return Check(True, "download (github.com)")
    return Check(False, "missing", (
        f"{label}: EfficientAd's pretrained teacher is not in anomalib's cache {folder} and github.com is "
        f"unreachable (no network?); set teacher: FILE ({name}) on that model entry, "
        f"or teacher: random for smoke runs only, {fetch_hint(source)}",))


def _has_class_folder(folder: Path) -> bool:
    """ImageFolder's layout: a class subfolder with an image somewhere below it."""
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        for _, _, files in os.walk(sub):
            if any(Path(f).suffix.lower() in IMAGE_SUFFIXES for f in files):
                return True
    return False


def _imagenette(model: EfficientAdConfig, label: str, source: str | None) -> Check:
    if model.imagenet_dir == "builtin":
        return Check(True, "builtin photos")
    folder = Path(model.imagenet_dir)
    if folder.is_dir():
        if _has_class_folder(folder):
            return Check(True, "found")
        return Check(False, "no classes", (
            f"{label}: imagenet_dir {folder} has no class subfolder with images (ImageFolder layout: "
            f"{folder}/<class>/*.jpg); point imagenet_dir: at the extracted imagenette2 folder, "
            "or delete the empty folder so anomalib downloads imagenette into it",))
    if folder.exists():
        return Check(False, "not a folder", (f"{label}: imagenet_dir {folder} is a file; point it at a folder",))
    if reachable(IMAGENETTE_URL)[IMAGENETTE_URL]:
        return Check(True, "download (1.5 GB)")
    return Check(False, "missing", (
        f"{label}: imagenet_dir {folder} does not exist and s3.amazonaws.com (imagenette's host) is unreachable "
        "(no network?); set imagenet_dir: to an ImageFolder folder such as an extracted imagenette2, "
        f"or imagenet_dir: builtin for smoke runs only, {fetch_hint(source)}",))


# --------------------------------------------------------------------------- cells


def _dataset(cell: Cell, root: Path) -> Check:
    if cell.data.format == "synthetic":
        from adrun import synthetic

        refused = synthetic.refusal(root)
        if refused:
            return Check(False, "not adrun's", (refused,))
        if not (root / cell.category).is_dir():
            return Check(True, "synthetic (made at run time)")
    problems = data.layout_problems(root, cell.category, cell.data)
    state = "found" if not problems else "problems" if (root / cell.category).is_dir() else "missing"
    return Check(not problems, state, tuple(problems))


def check_cells(cells: list[Cell], root: Path, source: str | None = None) -> list[CellReport]:
    """Every check for every cell. Model checks run once per model entry, not per category."""
    by_label: dict[str, dict[str, Check]] = {}
    by_category: dict[str, Check] = {}  # every cell shares data settings: read each category once
    reports = []
    for cell in cells:
        model = cell.model
        if cell.label not in by_label:
            if isinstance(model, PatchcoreConfig):
                by_label[cell.label] = {"weights": _backbone(model, cell.label, source)}
            else:
                by_label[cell.label] = {"teacher": _teacher(model, cell.label, source),
                                        "imagenette": _imagenette(model, cell.label, source)}
        if cell.category not in by_category:
            by_category[cell.category] = _dataset(cell, root)
        checks = {"dataset": by_category[cell.category], **by_label[cell.label]}
        reports.append(CellReport(cell.label, cell.category, model.name, checks))
    return reports


def problems(reports: list[CellReport]) -> list[str]:
    return list(dict.fromkeys(p for r in reports for c in r.checks.values() for p in c.problems))


def require(experiment: Experiment, cells: list[Cell], root: Path) -> None:
    """Raise one ``DataError`` or ``WeightsError`` listing everything the cells miss."""
    reports = check_cells(cells, root, experiment._source)
    lines = problems(reports)
    if lines:
        data_missing = any(not r.checks["dataset"].ok for r in reports)
        raise (DataError if data_missing else WeightsError)("\n".join(lines))


def doctor_cells(experiment: Experiment) -> list[CellReport]:
    """The cells of ``experiment`` and their checks, without generating or downloading anything."""
    exp_dir = experiment_dir(experiment)
    root = data.dataset_root(experiment.data, exp_dir)
    categories = experiment.data.categories
    unfound = None
    if categories == "all":
        if experiment.data.format == "synthetic":
            from adrun import synthetic

            categories = list(synthetic.CATEGORIES)
        else:
            try:
                categories = data.discover(root, experiment.data)
            except DataError as exc:
                categories, unfound = ["all"], Check(False, "missing", (str(exc),))
    reports = check_cells(expand(experiment, list(categories)), root, experiment._source)
    if unfound is not None:
        for report in reports:
            report.checks["dataset"] = unfound
    return reports


def sources(model: PatchcoreConfig | EfficientAdConfig) -> dict[str, str]:
    """Where a cell's weights come from, for its record: the choice, stated plainly."""
    if isinstance(model, PatchcoreConfig):
        if model.weights is not None:
            return {"backbone": f"file {Path(model.weights).resolve()}"}
        if not model.pre_trained:
            return {"backbone": "untrained (pre_trained: false)"}
        return {"backbone": f"timm pretrained {model.backbone} (Hugging Face cache or download)"}
    teacher = {"auto": "anomalib pretrained (cache or download)", "random": "random (smoke only)"}
    imagenet = "builtin photos" if model.imagenet_dir == "builtin" else str(Path(model.imagenet_dir).resolve())
    return {"teacher": teacher.get(model.teacher, f"file {Path(model.teacher).resolve()}"), "imagenette": imagenet}


def environment() -> list[tuple[str, str]]:
    """(name, value) rows for ``adrun doctor``: versions, accelerator, caches, network."""
    from adrun.records import versions

    v = versions()
    rows = [(name, v[name]) for name in ("adrun", "anomalib", "torch", "lightning", "timm")]
    rows.append(("accelerator", accelerator()))
    hub = hf_cache_dir()
    cached = sorted(p.name.removeprefix("models--").replace("--", "/") for p in hub.glob("models--timm--*"))
    rows.append(("Hugging Face cache (timm backbones)", f"{hub} ({', '.join(cached) or 'none cached'})"))
    teachers = teacher_dir()
    found = sorted(p.name for p in teachers.glob("pretrained_teacher_*.pth")) if teachers.is_dir() else []
    rows.append(("anomalib cache (EfficientAd teachers)", f"{teachers} ({', '.join(found) or 'none cached'})"))
    rows.append(("torch hub cache", str(torch_hub_dir())))
    rows.append(("HF_HUB_OFFLINE", "1 (hub cache only)" if hf_offline() else "unset"))
    probes = reachable(hf_endpoint(), TEACHER_URL, IMAGENETTE_URL)
    rows.append(("network", ", ".join(f"{urlsplit(u).hostname} {'reachable' if ok else 'unreachable'}"
                                      for u, ok in probes.items())))
    return rows


def accelerator() -> str:
    """What torch sees: CUDA devices by name, Apple MPS, or CPU only."""
    import torch

    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return f"cuda: {', '.join(names)} (torch CUDA {torch.version.cuda})"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps (Apple GPU)"
    return f"cpu only ({os.cpu_count()} cores); torch {torch.__version__} sees no GPU"
