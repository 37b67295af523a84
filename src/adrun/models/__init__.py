"""The models adrun runs: one spec per model, and everything else derived from their list.

``SPECS`` is the registry: the ``models:`` config union, ``--model``'s choices, the
build, preflight, fetch, the records' provenance and ``adrun models`` all read it. A
config can name only these models; nothing is ever imported from a path a config holds.
Adding a model means adding its package here (see docs/architecture.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import Field

from adrun.models import (
    cfa,
    cflow,
    dfkde,
    dfm,
    draem,
    efficient_ad,
    fastflow,
    fre,
    ganomaly,
    padim,
    patchcore,
    reverse_distillation,
    stfpm,
    supersimplenet,
    uflow,
)
from adrun.models.base import ModelSpec

SPECS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        patchcore.SPEC,
        efficient_ad.SPEC,
        padim.SPEC,
        stfpm.SPEC,
        fastflow.SPEC,
        reverse_distillation.SPEC,
        dfm.SPEC,
        dfkde.SPEC,
        cfa.SPEC,
        cflow.SPEC,
        draem.SPEC,
        ganomaly.SPEC,
        uflow.SPEC,
        supersimplenet.SPEC,
        fre.SPEC,
    )
}
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
