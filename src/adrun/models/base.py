"""What a model spec is: everything adrun knows about one anomalib model, in one place.

A spec module (``adrun/models/<name>/``) exports ``SPEC``, an instance of a ``ModelSpec``
subclass. Everything model-specific in adrun comes from the list of specs: the config
schema (its ``config`` class joins the ``models:`` union), the build, the checks before a
run, what ``adrun fetch`` downloads, where the weights came from (the record), the rules a
cell must follow, the notes a sweep prints, and ``adrun models``.

Spec modules import no anomalib at module level, so ``adrun --help`` and the config
checks stay fast; ``build`` and ``lightning_class`` import it when a cell runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from adrun.checks import Check, Download
from adrun.schema import ModelBase

if TYPE_CHECKING:
    from anomalib.metrics import Evaluator
    from anomalib.models import AnomalibModule


class ModelSpec:
    """One model: subclass it, set the class attributes, override what the model needs."""

    name: ClassVar[str]  # the registry name: `name:` in a config, `--model` on the command line
    anomalib_class: ClassVar[str]  # the anomalib class it runs, for `adrun models` and docs
    config: ClassVar[type[ModelBase]]  # its config schema; `name: Literal[<name>]` is the union tag
    summary: ClassVar[str] = ""  # one line for `adrun models`
    # Where it comes in `adrun models` and error messages: by rank, then by name.
    rank: ClassVar[int] = 100
    image_size: ClassVar[int] = 256  # the default of `image_size:`
    weights: ClassVar[str] = "none"  # what pretrained weights it needs, in words
    offline: ClassVar[str] = "yes"  # whether (and how) it runs without internet
    # Model keys that lengthen training (none: it trains one epoch, as anomalib's default).
    training_keys: ClassVar[tuple[str, ...]] = ()
    # Entry keys that `adrun train --model NAME` (no config) sets besides anomalib's defaults.
    standalone: ClassVar[dict[str, Any]] = {}
    # Keys added after cells were first made: at these values they stay out of the cell key,
    # so those cells keep their keys (and their records) instead of rerunning.
    unkeyed_defaults: ClassVar[dict[str, Any]] = {}
    # Config keys that are adrun's own setting although anomalib's constructor has an
    # argument of that name (which adrun then leaves at anomalib's default).
    adrun_keys: ClassVar[tuple[str, ...]] = ()

    # ------------------------------------------------------------------ building

    def build(self, cfg: Any, exp_dir: Path, evaluator: Evaluator) -> AnomalibModule:
        """The anomalib model for this config, with the experiment's ``evaluator``."""
        raise NotImplementedError

    def lightning_class(self) -> type[Any]:
        """The LightningModule class ``build`` makes: checkpoints are loaded with its safe types."""
        raise NotImplementedError

    def for_checkpoint(self, cfg: Any) -> Any:
        """The config to rebuild the model with before loading its checkpoint (test, predict, export)."""
        return cfg

    # ------------------------------------------------------------------ before a run

    def checks(self, cfg: Any, label: str, source: str | None) -> dict[str, Check]:
        """Name -> Check of what this model entry needs (weights, extra data); the doctor's columns."""
        return {}

    def cell_problems(self, cell: Any) -> list[str]:
        """One line per rule this cell breaks (e.g. a batch size the model cannot train with)."""
        return []

    def notes(self, cfg: Any) -> list[str]:
        """Warnings a sweep prints before its first cell (e.g. a random teacher)."""
        return []

    def downloads(self, cfg: Any) -> list[Download]:
        """What ``adrun fetch`` downloads for this entry, each marked present or not."""
        return []

    def environment(self) -> list[tuple[str, str]]:
        """(name, value) rows for ``adrun doctor``'s environment table: this model's caches."""
        return []

    def probe_urls(self) -> tuple[str, ...]:
        """Hosts ``adrun doctor`` probes for this model's downloads."""
        return ()

    # ------------------------------------------------------------------ records

    def sources(self, cfg: Any) -> dict[str, str]:
        """Where a cell's weights and extra data come from, stated plainly, for its record."""
        return {}


class MetricsFromConfig:
    """The Evaluator comes from the config (``metrics:``), never from a checkpoint.

    anomalib's AUPRO keeps ``fpr_limit`` as a buffer, so its checkpoints carry evaluator
    state (in the model's state dict and again as the Evaluator callback's state), and
    loading one into a model asked for other metrics fails on the keys. adrun saves none
    and, on load, keeps the evaluator it was built with, so checkpoints from before adrun
    asked for AUPRO load too. Every adrun model subclass mixes this in first.
    """

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)  # type: ignore[misc]
        _drop_evaluator(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        _drop_evaluator(checkpoint)
        evaluator = self.evaluator  # type: ignore[attr-defined]
        if evaluator is not None:
            checkpoint["state_dict"].update({f"evaluator.{k}": v for k, v in evaluator.state_dict().items()})
        super().on_load_checkpoint(checkpoint)  # type: ignore[misc]


def _drop_evaluator(checkpoint: dict) -> None:
    state = checkpoint.get("state_dict", {})
    checkpoint["state_dict"] = type(state)((k, v) for k, v in state.items() if not k.startswith("evaluator."))
    # The Evaluator is a callback too; Lightning keys callback state by class name.
    callbacks = checkpoint.get("callbacks") or {}
    for key in [k for k in callbacks if str(k).startswith("Evaluator")]:
        del callbacks[key]
