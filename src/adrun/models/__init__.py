"""The models adrun runs: one spec per model, and everything else derived from their list.

``SPECS`` is the registry: the ``models:`` config union, ``--model``'s choices, the
build, preflight, fetch, the records' provenance and ``adrun models`` all read it. A
config can name only these models; nothing is ever imported from a path a config holds.
Adding a model means adding its package here (see docs/architecture.md); nothing
else names it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import Field

from adrun.models.base import ModelSpec


def _discover() -> dict[str, ModelSpec]:
    """Every spec package under adrun/models (a subpackage with a ``SPEC``), ranked.

    Only adrun's own subpackages are imported: the list comes from this folder, never
    from a config. A new model is a new package here; nothing else needs to name it.
    """
    import importlib
    import pkgutil

    found: list[ModelSpec] = []
    for info in pkgutil.iter_modules(__path__):
        if not info.ispkg:
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        model = getattr(module, "SPEC", None)
        if isinstance(model, ModelSpec):
            found.append(model)
    found.sort(key=lambda model: (model.rank, model.name))
    return {model.name: model for model in found}


SPECS: dict[str, ModelSpec] = _discover()
MODEL_NAMES: tuple[str, ...] = tuple(SPECS)
if TYPE_CHECKING:  # to a type checker, any model entry: the union is built at run time
    from adrun.schema import ModelBase as ModelConfig
else:  # each model entry validates against its own spec's schema, picked by `name:`
    ModelConfig = Annotated[Union[tuple(spec.config for spec in SPECS.values())], Field(discriminator="name")]  # noqa: UP007


def spec(name: str) -> ModelSpec:
    """The spec of a registry name; KeyError for a name no spec has (config validation refuses those first)."""
    return SPECS[name]


def spec_of(cfg: Any) -> ModelSpec:
    """The spec of a validated model config."""
    return SPECS[cfg.name]
