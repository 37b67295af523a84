"""Models as a plug-in axis: every model-specific fact lives in its spec under adrun/models/.

The list of specs is the registry: the config union, ``--model``, preflight, fetch, the
record's provenance and ``adrun models`` derive from it, and each spec's defaults are
anomalib's own.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adrun.cli import app
from adrun.config import validate
from adrun.errors import ConfigError
from adrun.models import MODEL_NAMES, SPECS

SRC = Path(__file__).resolve().parents[1] / "src" / "adrun"


def test_no_module_outside_models_names_a_model():
    """The issue's grep check, over adrun's code: only adrun/models/ knows a model by name.

    Short names (dfm, cfa, fre) as whole words only: they are parts of other words ("free").
    """
    names = [re.escape(n) if len(n) > 5 else rf"\b{re.escape(n)}\b" for n in (*MODEL_NAMES, "efficientad")]
    pattern = re.compile("|".join(names), re.IGNORECASE)
    named = sorted(
        str(p.relative_to(SRC))
        for p in SRC.rglob("*.py")
        if "models" not in p.relative_to(SRC).parts[:1] and pattern.search(p.read_text())
    )
    assert named == []
    # The registry finds every spec package by itself: adding a model names it nowhere else.
    assert {p.parent.name for p in (SRC / "models").glob("*/__init__.py")} == set(MODEL_NAMES)
    assert "padim" not in (SRC / "models" / "__init__.py").read_text()
    # The founding study's two first (rank), then by name.
    assert MODEL_NAMES[:2] == ("patchcore", "efficient_ad")
    assert list(MODEL_NAMES[2:]) == sorted(MODEL_NAMES[2:])


def test_adrun_models_lists_every_spec_with_its_class_weights_and_offline_use():
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    for spec in SPECS.values():
        assert f"{spec.name}  ({spec.anomalib_class})" in result.output
        assert f"  weights: {spec.weights}\n" in result.output and f"  offline: {spec.offline}\n" in result.output
        module, _, cls = spec.anomalib_class.rpartition(".")
        assert issubclass(spec.lightning_class(), getattr(importlib.import_module(module), cls))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_a_spec_defaults_to_anomalibs_own_constructor_defaults(name):
    spec = SPECS[name]
    module, _, cls = spec.anomalib_class.rpartition(".")
    signature = inspect.signature(getattr(importlib.import_module(module), cls).__init__)
    fields = spec.config.model_fields
    own = [
        p
        for p in signature.parameters.values()
        if p.default is not inspect.Parameter.empty
        and p.name not in ("pre_processor", "post_processor", "evaluator", "visualizer")
    ]
    shared = [p for p in own if p.name in fields and p.name not in spec.adrun_keys]
    # The model's own keys, not only the common ones (STFPM has only two).
    assert len(shared) >= min(4, len(own)), [p.name for p in shared]
    for parameter in shared:
        default = fields[parameter.name].get_default(call_default_factory=True)
        expected = getattr(parameter.default, "value", parameter.default)  # enums: anomalib's value
        if isinstance(expected, tuple | list):
            expected = list(expected)
        assert default == expected, (name, parameter.name)


def test_the_config_union_and_its_errors_come_from_the_specs():
    with pytest.raises(ConfigError) as caught:
        validate({"name": "x", "models": [{"name": "padchore"}]})
    assert str(caught.value) == (
        "config: models.0.name: unknown model 'padchore' (did you mean 'patchcore'?); "
        f"choose one of {', '.join(MODEL_NAMES)}"
    )
    for name, spec in SPECS.items():
        experiment = validate({"name": "x", "models": [{"name": name, **spec.standalone}]})
        assert type(experiment.models[0]) is spec.config


def test_a_rule_of_a_spec_refuses_the_cell_before_it_runs(tmp_path):
    """EfficientAd's batch size 1 is its spec's cell rule; the plan refuses the cell with its line."""
    from conftest import tiny_raw, write_yaml

    raw = tiny_raw(tmp_path / "results", categories=["tile"])
    raw["models"] = [m for m in raw["models"] if m["name"] == "efficient_ad"]
    raw["models"][0]["train_batch_size"] = 2
    result = CliRunner().invoke(app, ["sweep", str(write_yaml(tmp_path / "c.yaml", raw))])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        "adrun: error: efficient_ad: EfficientAd trains with batch size 1 (paper setting, enforced by anomalib); "
        "set train_batch_size: 1 on that model entry"
    )
    assert not (tmp_path / "results" / "tiny" / "runs").exists()
