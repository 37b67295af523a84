"""Check every cell before the first one runs: its dataset, and what its model's spec needs.

The same checks feed ``require`` (one error, one line per missing thing, each naming
its fixes) and ``adrun doctor``'s table. The dataset check is here; each model's checks
(weights, teacher, extra data) come from its spec (``adrun.models``), and the cache and
network probes they share from ``adrun.checks``. Nothing here downloads. Where weights
are looked for, and why, is in docs/offline.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from adrun import checks, data
from adrun.checks import Check
from adrun.config import Cell, Experiment, expand, experiment_dir
from adrun.datasets import format_spec
from adrun.errors import DataError, WeightsError
from adrun.models import SPECS, spec_of


@dataclass
class CellReport:
    label: str
    category: str
    model: str
    checks: dict[str, Check] = field(default_factory=dict)  # dataset, then the model's (weights, teacher, ...)

    @property
    def ready(self) -> bool:
        return all(c.ok for c in self.checks.values())


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
    folder = format_spec(cell.data.format).folder(root, cell.category)
    state = "found" if not problems else "problems" if folder.is_dir() else "missing"
    return Check(not problems, state, tuple(problems))


def check_cells(cells: list[Cell], root: Path, source: str | None = None) -> list[CellReport]:
    """Every check for every cell. Model checks run once per model entry, not per category."""
    by_label: dict[str, dict[str, Check]] = {}
    by_category: dict[str, Check] = {}  # every cell shares data settings: read each category once
    reports = []
    for cell in cells:
        model = cell.model
        if cell.label not in by_label:
            by_label[cell.label] = spec_of(model).checks(model, cell.label, source)
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


def environment() -> list[tuple[str, str]]:
    """(name, value) rows for ``adrun doctor``: versions, accelerator, caches, network."""
    from adrun.records import versions

    v = versions()
    rows = [(name, v[name]) for name in ("adrun", "anomalib", "torch", "lightning", "timm")]
    rows.append(("accelerator", accelerator()))
    hub = checks.hf_cache_dir()
    cached = sorted(p.name.removeprefix("models--").replace("--", "/") for p in hub.glob("models--timm--*"))
    rows.append(("Hugging Face cache (timm backbones)", f"{hub} ({', '.join(cached) or 'none cached'})"))
    urls = [checks.hf_endpoint()]
    for model in SPECS.values():
        rows += model.environment()
        urls += [u for u in model.probe_urls() if u not in urls]
    rows.append(("torch hub cache", str(checks.torch_hub_dir())))
    rows.append(("HF_HUB_OFFLINE", "1 (hub cache only)" if checks.hf_offline() else "unset"))
    probes = checks.reachable(*urls)
    rows.append(
        (
            "network",
            ", ".join(f"{urlsplit(u).hostname} {'reachable' if ok else 'unreachable'}" for u, ok in probes.items()),
        )
    )
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
