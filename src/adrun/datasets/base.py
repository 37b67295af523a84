"""What a dataset format is to adrun: its layout check, its anomalib datamodule, its download.

A format is one ``DatasetSpec`` in ``adrun/datasets/<format>.py``; ``adrun.datasets.FORMATS``
lists them, and config, data, preflight, registry and fetch read that list. Spec modules
import anomalib only inside functions, so ``--help`` stays fast. adrun never lets an
anomalib datamodule download or write into the dataset: ``Guarded`` replaces
``prepare_data``, and only ``adrun fetch`` downloads.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from adrun.errors import DatasetMissing


class DataSettings(Protocol):
    """The ``data:`` keys a format reads (``adrun.config.DataConfig`` has them)."""

    format: str
    extensions: list[str]
    test_good_from_train: bool


class DatasetSpec:
    name: str = ""
    title: str = ""  # how the README and the errors name it
    anomalib_class: str = ""  # in anomalib.data
    default_root: str = ""
    layout: str = ""  # one line: what <root> holds
    # Whether anomalib can download it (then `adrun fetch` does, on request; nothing else ever does).
    fetchable: bool = False
    # Formats whose categories are fixed (Kolektor has none: its one category is its name).
    categories: tuple[str, ...] | None = None
    # anomalib 2.7.0 + pandas 3: some readers build string columns that pandas 3 turns
    # None into NaN in (MVTec AD 2's mask paths) or refuses lists in (MVTec LOCO's masks).
    pandas_fix: bool = False

    # ----------------------------------------------------------------- the layout
    def discover(self, root: Path, data: DataSettings) -> list[str]:
        """Every category under ``root``; ``DataError`` text when none (raised by data.py)."""
        raise NotImplementedError

    def problems(self, root: Path, category: str, data: DataSettings, verify: bool = False) -> list[str]:
        """One line per problem of ``category`` under ``root``, each naming its fix; [] when it is fine."""
        raise NotImplementedError

    def folder(self, root: Path, category: str) -> Path:
        """The folder whose disappearance means the dataset is gone."""
        return Path(root) / category

    def has_masks(self, root: Path, category: str, data: DataSettings) -> bool:
        return True

    # ----------------------------------------------------------------- anomalib
    def datamodule_class(self, root: Path, category: str, data: DataSettings) -> type:
        from anomalib import data as anomalib_data

        return getattr(anomalib_data, self.anomalib_class)

    def arguments(self, root: Path, category: str, data: DataSettings) -> dict[str, Any]:
        """The datamodule's own arguments (root, category, split rules) besides batch sizes and seed."""
        return {"root": root, "category": category}

    def build(self, root: Path, category: str, data: DataSettings, common: dict[str, Any], smoke: bool) -> Any:
        cls = guarded(self.datamodule_class(root, category, data), smoke)
        datamodule = cls(**self.arguments(root, category, data), **common)
        datamodule.adrun_folder = self.folder(root, category)
        datamodule.adrun_gone_hint = self.gone_hint()
        datamodule.adrun_pandas_fix = self.pandas_fix
        return datamodule

    def gone_hint(self) -> str:
        """The end of the line a cell fails with when its dataset vanished mid-sweep."""
        if self.fetchable:
            return f"adrun downloads {self.title} only through `adrun fetch`"
        return f"adrun never downloads {self.title}"

    def download(self, root: Path, category: str) -> Callable[[], None] | None:
        """What ``adrun fetch`` runs to get ``category`` into ``root`` (anomalib's own download), or None."""
        if not self.fetchable:
            return None

        def get() -> None:
            from anomalib import data as anomalib_data

            cls = getattr(anomalib_data, self.anomalib_class)
            cls(**self.download_arguments(root, category)).prepare_data()

        return get

    def download_arguments(self, root: Path, category: str) -> dict[str, Any]:
        return {"root": root, "category": category}


def guarded(base: type, smoke: bool) -> type:
    """``base`` with adrun's rules (``Guarded``), and ``--smoke`` trimming when asked.

    Made once per class and kept in this module's namespace, so pickle finds it by name.
    """
    name = f"Adrun{'Smoke' if smoke else ''}{base.__name__}"
    cls = globals().get(name)
    if cls is None:
        mixins = (SmokeSubset, Guarded) if smoke else (Guarded,)
        cls = type(name, (*mixins, base), {"__module__": __name__, "__qualname__": name})
        globals()[name] = cls
    return cls


@contextlib.contextmanager
def _pandas_strings_as_objects():
    import pandas

    with pandas.option_context("future.infer_string", False):
        yield


class Guarded:
    """adrun's rules on an anomalib datamodule: no download, no write into the dataset.

    anomalib's ``prepare_data`` downloads when the folder is missing (VisA also writes its
    split tree into the dataset): never here. A dataset that vanished after the preflight
    (moved, deleted, unmounted) fails its cell with one line instead.
    """

    adrun_folder: Path
    adrun_gone_hint: str = ""
    adrun_pandas_fix: bool = False

    def prepare_data(self) -> None:
        folder = Path(self.adrun_folder)
        if not folder.is_dir():
            raise DatasetMissing(
                f"{folder} is gone (moved, deleted or unmounted since the sweep began); restore it and run the "
                f"same command again to resume ({self.adrun_gone_hint})"
            )

    def _setup(self, _stage: str | None = None) -> None:
        with _pandas_strings_as_objects() if self.adrun_pandas_fix else contextlib.nullcontext():
            super()._setup(_stage)  # type: ignore[misc]


class SmokeSubset:
    """Trims the datasets after anomalib's own setup: the ``--smoke`` tiny subset."""

    smoke_n_train: int = 4
    smoke_n_test_per_label: int = 1
    train_data: Any  # anomalib's datamodule sets both in its own _setup
    test_data: Any

    def _setup(self, _stage: str | None = None) -> None:
        super()._setup(_stage)  # type: ignore[misc]
        train = self.train_data.samples
        self.train_data.samples = train.head(self.smoke_n_train).reset_index(drop=True)
        test = self.test_data.samples
        # A few images of every label folder (good and each defect) keep AUROC defined;
        # the label too, where one folder holds both (Kolektor).
        folder = test.image_path.map(lambda p: Path(p).parent.name)
        picked = test.groupby([test.label_index, folder], sort=True, group_keys=False).head(self.smoke_n_test_per_label)
        self.test_data.samples = picked.reset_index(drop=True)
