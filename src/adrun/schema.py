"""The schema pieces every model entry shares, below both ``config`` and ``models``.

``config`` builds the experiment schema from the model specs, and each spec's config
class derives from ``ModelBase`` here, so neither imports the other's module for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class TrainerConfig(Strict):
    """The Lightning Trainer arguments adrun passes through."""

    accelerator: str = "auto"
    # A count, "auto", or a list of GPU indices: a serial sweep gives the list to Lightning;
    # `--jobs N` gives each worker one of them (CUDA_VISIBLE_DEVICES), round robin.
    devices: int | str | list[int] = 1
    max_epochs: int | None = None
    max_steps: int | None = None
    precision: str | int | None = None
    check_val_every_n_epoch: int | None = None
    limit_train_batches: int | float | None = None

    @field_validator("devices")
    @classmethod
    def _gpu_indices(cls, value):
        if isinstance(value, list):
            if not value:
                raise ValueError("an empty list of GPU indices; give at least one, e.g. [0, 1], or a count")
            if any(i < 0 for i in value) or len(set(value)) != len(value):
                raise ValueError(f"{value}: GPU indices must be distinct and >= 0, e.g. [0, 1]")
        return value


class ModelBase(Strict):
    """Keys of every model entry; each model's config class adds ``name: Literal[...]`` and its own keys."""

    if TYPE_CHECKING:  # declared by each subclass as its union tag
        name: str
    label: str | None = Field(None, pattern=NAME_PATTERN)
    # None: the model's own default size (ModelSpec.image_size).
    image_size: int | None = Field(None, ge=32)
    train_batch_size: int | None = Field(None, ge=1)
    eval_batch_size: int | None = Field(None, ge=1)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
