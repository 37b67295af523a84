"""Where a cell's images are: dataset root, category discovery, and the on-disk layout checks.

Checked before the first cell runs, so a missing folder is one clear line instead of
an anomalib traceback halfway through a sweep. What each ``data.format`` expects is its
spec's (``adrun.datasets``); this module picks the spec. No anomalib import here.
"""

from __future__ import annotations

from pathlib import Path

from adrun.config import DataConfig, Experiment
from adrun.datasets import format_spec
from adrun.datasets.layout import missing_root, unreadable
from adrun.errors import DataError

__all__ = ["dataset_root", "discover", "has_masks", "layout_problems", "prepare", "unreadable"]

DEFAULT_ROOT = Path("./datasets/MVTecAD")


def dataset_root(data: DataConfig, exp_dir: Path) -> Path:
    if data.root is not None:
        return Path(data.root)
    # Synthetic data is generated inside the experiment's own folder.
    return exp_dir / "data" if data.format == "synthetic" else Path(format_spec(data.format).default_root)


def has_masks(root: Path, category: str, data: DataConfig) -> bool:
    """Whether the category's test set has ground-truth masks (else pixel metrics are not available)."""
    return format_spec(data.format).has_masks(root, category, data)


def prepare(experiment: Experiment, exp_dir: Path, verify_images: bool = False) -> tuple[Path, list[str]]:
    """Resolve the dataset root and category list; generate synthetic data when asked.

    Then check every category: layout, masks, and each image's header (all of each image
    with ``verify_images``). Any problem is one line of one ``DataError``.
    """
    data = experiment.data
    root = dataset_root(data, exp_dir)
    if data.format == "synthetic":
        from adrun import synthetic

        categories = list(synthetic.CATEGORIES) if data.categories == "all" else list(data.categories)
        unknown = [c for c in categories if c not in synthetic.CATEGORIES]
        if unknown:
            raise DataError(
                f"data.categories: synthetic data has no category {unknown[0]!r}; "
                f"choose from {', '.join(synthetic.CATEGORIES)}"
            )
        s = data.synthetic
        synthetic.make_dataset(
            root,
            categories,
            seed=s.seed,
            image_size=s.image_size,
            n_train=s.n_train,
            n_test_good=s.n_test_good,
            n_test_defect=s.n_test_defect,
        )
    else:
        categories = discover(root, data) if data.categories == "all" else list(data.categories)
    problems = [p for c in categories for p in layout_problems(root, c, data, verify_images)]
    if problems:
        raise DataError("\n".join(dict.fromkeys(problems)))
    return root, categories


def discover(root: Path, data: DataConfig) -> list[str]:
    """Every category under ``root`` in the format's layout: users' own products count too."""
    _check_root(root, data)
    return format_spec(data.format).discover(root, data)


def _check_root(root: Path, data: DataConfig) -> None:
    if not root.is_dir():
        spec = format_spec(data.format)
        raise DataError(missing_root(root, spec.title, spec.fetchable))


def layout_problems(root: Path, category: str, data: DataConfig, verify_images: bool = False) -> list[str]:
    """One line per missing or broken piece of ``category`` in the format's layout, each naming its fix."""
    return format_spec(data.format).problems(Path(root), category, data, verify_images)
