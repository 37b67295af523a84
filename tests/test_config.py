"""Config schema: validation messages, overrides, grid expansion, shipped configs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from conftest import CONFIGS

from adrun.config import apply_overrides, expand, experiment_dir, load_experiment, model_entries, validate
from adrun.errors import ConfigError
from adrun.models import MODEL_NAMES

BASE = {"name": "x", "data": {"format": "synthetic"}, "models": [{"name": "patchcore"}]}


def with_(**changes):
    raw = yaml.safe_load(yaml.safe_dump(BASE))
    for key, value in changes.items():
        raw = apply_overrides(raw, [f"{key}={value}"])
    return raw


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    experiment = load_experiment(path)
    assert model_entries(experiment)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            with_(**{"models.0.coreset_sampling_ratoi": 0.1}),
            "models.0.coreset_sampling_ratoi: unknown key; did you mean 'coreset_sampling_ratio'?",
        ),
        (
            with_(**{"models.0.name": "patchcor"}),
            "models.0.name: unknown model 'patchcor' (did you mean 'patchcore'?); choose one of "
            + ", ".join(MODEL_NAMES),
        ),
        (
            with_(**{"models.0.coreset_sampling_ratio": "lots"}),
            "models.0.coreset_sampling_ratio: Input should be a valid number, unable to parse string as a number (got 'lots')",
        ),
        (with_(**{"data.fromat": "mvtec"}), "data.fromat: unknown key; did you mean 'format'?"),
        (
            with_(**{"data.format": "coco"}),
            "data.format: unknown data format; choose one of mvtec, mvtec_ad2, mvtec_loco, visa, btech, mpdd, "
            "kolektor, realiad, folder, synthetic (got 'coco')",
        ),
        (with_(**{"seed": "abc"}), "seed: expected an integer or {grid: [0, 1, 2]} (got 'abc')"),
        (
            with_(**{"models.0.name": "efficient_ad", "models.0.image_size": 128}),
            "models.0.image_size: must be at least 256 for efficient_ad (its autoencoder decodes to 256 px) (got 128)",
        ),
        ({"data": {}, "models": [{"name": "patchcore"}]}, "name: required key is missing; add it"),
        (with_(**{"models.0.layers": "{grid: []}"}), "models.0.layers.grid: expected a non-empty list of values"),
    ],
)
def test_validation_message_is_one_clear_line(raw, expected):
    with pytest.raises(ConfigError) as info:
        validate(raw, "exp.yaml")
    assert str(info.value) == f"exp.yaml: {expected}"


def test_every_problem_gets_its_own_line():
    raw = with_(**{"seed": "abc", "models.0.num_neighbors": 0})
    with pytest.raises(ConfigError) as info:
        validate(raw, "exp.yaml")
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("exp.yaml: models.0.num_neighbors: Input should be greater than or equal to 1")
    assert lines[1].startswith("exp.yaml: seed:")


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nmodels: [\n  - name: patchcore\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: .* at line \d+; fix the YAML syntax there"):
        load_experiment(path)


def test_yaml_is_parsed_safely(tmp_path):
    """A python/object tag is refused by the loader itself, in a file and in --set: nothing runs."""
    marker = tmp_path / "pwned"
    payload = f"!!python/object/apply:os.system ['touch {marker}']"
    path = tmp_path / "evil.yaml"
    path.write_text(f"name: {payload}\nmodels: [{{name: patchcore}}]\n")
    with pytest.raises(ConfigError, match="could not determine a constructor for the tag"):
        load_experiment(path)
    with pytest.raises(ConfigError):
        load_experiment(raw=BASE, overrides=[f"name={payload}"])
    assert not marker.exists()
    # adrun builds documents with PyYAML's SafeLoader itself (no subclass that could gain
    # a constructor) and never calls yaml.load or yaml.unsafe_load anywhere.
    from adrun import config

    source = Path(config.__file__).read_text()
    assert "yaml.SafeLoader(text)" in source and not re.search(r"class \w+\(yaml\.\w*Loader\)", source)
    src = Path(config.__file__).parent
    assert not [p for p in src.rglob("*.py") if re.search(r"yaml\.(unsafe_)?load\(|full_load", p.read_text())]
    # Duplicate keys are still refused, in nested mappings and behind an alias; a merge key may override.
    with pytest.raises(yaml.constructor.ConstructorError, match="key 'b' appears twice"):
        config.safe_load("a: &x\n  b: 1\n  b: 2\nc: *x\n")
    with pytest.raises(yaml.constructor.ConstructorError, match="key 'n' appears twice"):
        config.safe_load("l:\n- {n: 1, n: 2}\n")
    assert config.safe_load("base: &b {k: 1}\nx:\n  <<: *b\n  k: 2\n") == {"base": {"k": 1}, "x": {"k": 2}}
    assert config.safe_load("") is None


def test_set_overrides_are_typed_and_validated():
    raw = apply_overrides(
        BASE, ["data.root=/data/mvtec", "models.0.coreset_sampling_ratio=0.01", "data.categories=[a, b]"]
    )
    experiment = validate(raw)
    assert str(experiment.data.root) == "/data/mvtec"
    assert experiment.models[0].coreset_sampling_ratio == 0.01
    assert experiment.data.categories == ["a", "b"]
    with pytest.raises(ConfigError, match=r"--set 'models.3.backbone=x': '3' is not an index of a list with 1 item$"):
        apply_overrides(BASE, ["models.3.backbone=x"])
    with pytest.raises(ConfigError, match="expected key.path=value"):
        apply_overrides(BASE, ["seed"])
    with pytest.raises(ConfigError, match="models.0.pre_traind: unknown key; did you mean 'pre_trained'"):
        load_experiment(raw=BASE, overrides=["models.0.pre_traind=false"])


def test_grid_expands_into_labelled_cells():
    raw = with_(
        **{"models.0.coreset_sampling_ratio": "{grid: [0.01, 0.1]}", "models.0.num_neighbors": "{grid: [1, 9]}"}
    )
    raw["models"].append({"name": "efficient_ad", "train_batch_size": 1})
    experiment = validate(raw)
    cells = expand(experiment, ["tile", "grid"])
    labels = list(dict.fromkeys(c.label for c in cells))
    assert labels == [
        "patchcore[coreset_sampling_ratio=0.01,num_neighbors=1]",
        "patchcore[coreset_sampling_ratio=0.01,num_neighbors=9]",
        "patchcore[coreset_sampling_ratio=0.1,num_neighbors=1]",
        "patchcore[coreset_sampling_ratio=0.1,num_neighbors=9]",
        "efficient_ad",
    ]
    assert len(cells) == 10
    first = cells[0]
    assert (first.model.coreset_sampling_ratio, first.model.num_neighbors, first.category) == (0.01, 1, "tile")
    assert len({c.key for c in cells}) == 10  # every cell its own key


def test_grid_values_are_each_validated():
    raw = with_(**{"models.0.coreset_sampling_ratio": "{grid: [0.1, 2.0]}"})
    with pytest.raises(ConfigError, match="models.0.coreset_sampling_ratio: Input should be less than or equal to 1"):
        validate(raw)


def test_duplicate_labels_are_refused():
    raw = yaml.safe_load(yaml.safe_dump(BASE))
    raw["models"].append({"name": "patchcore"})
    with pytest.raises(ConfigError, match="label 'patchcore' is used twice"):
        model_entries(validate(raw))


def test_per_model_overrides_merge_over_experiment_trainer():
    raw = with_(**{"models.0.trainer": "{max_steps: 7}", "trainer": "{max_epochs: 3, accelerator: cpu}"})
    cell = expand(validate(raw), ["tile"])[0]
    assert (cell.trainer.max_steps, cell.trainer.max_epochs, cell.trainer.accelerator) == (7, 3, "cpu")


def test_key_changes_with_config_and_only_with_config():
    experiment = validate(with_())
    (a,) = expand(experiment, ["tile"])
    (b,) = expand(validate(with_()), ["tile"])
    (c,) = expand(validate(with_(**{"models.0.num_neighbors": 3})), ["tile"])
    (d,) = expand(validate(with_(**{"seed": 1})), ["tile"])
    assert a.key == b.key
    assert len({a.key, c.key, d.key}) == 3
    # Adding a category to the sweep leaves the finished cells' keys alone.
    (e, _) = expand(validate(with_(**{"data.categories": "[tile, grid]"})), ["tile", "grid"])
    assert e.key == a.key


def test_smoke_results_live_apart():
    experiment = validate(with_(output="out"))
    assert str(experiment_dir(experiment)) == "out/x"
    assert str(experiment_dir(experiment, smoke=True)) == "out/smoke/x"


@pytest.mark.parametrize("seeds", [{"seed": "{grid: [0, 1, 2]}"}, {"seeds": "[0, 1, 2]"}], ids=["seed-grid", "seeds"])
def test_seeds_are_a_grid_dimension(seeds):
    experiment = validate(with_(**seeds))
    assert experiment.seed_values() == [0, 1, 2]
    cells = expand(experiment, ["tile", "grid"])
    assert [(c.seed, c.category) for c in cells] == [(s, c) for s in (0, 1, 2) for c in ("tile", "grid")]
    assert {c.label for c in cells} == {"patchcore"}  # the column is the label, without the seed
    assert len({c.key for c in cells}) == len({c.folder for c in cells}) == 6
    assert cells[0].folder == "runs/patchcore/tile/seed-0"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"seeds": "[0, 1]", "seed": 3},
            "seed and seeds are both set; keep one (several seeds: seeds: [0, 1, 2], or seed: {grid: [0, 1, 2]})",
        ),
        ({"seeds": "[1, 1]"}, "seeds: [1, 1] repeats a seed; list each seed once"),
        ({"seed": "{grid: []}"}, "seed: expected an integer or {grid: [0, 1, 2]} (a non-empty list of seeds)"),
        ({"seed": "{list: [1]}"}, "seed: expected an integer or {grid: [0, 1, 2]} (a non-empty list of seeds)"),
        ({"seed": "{grid: [1, x]}"}, "seed: expected an integer or {grid: [0, 1, 2]}"),
        ({"seed": -1}, "seed: a seed lies in 0 .. 4294967295 (Lightning's seed_everything) (got -1)"),
        ({"seeds": "[-1]"}, "seeds.0: Input should be greater than or equal to 0 (got -1)"),
    ],
)
def test_bad_seeds_are_one_line(changes, expected):
    with pytest.raises(ConfigError) as info:
        validate(with_(**changes), "exp.yaml")
    assert str(info.value) == f"exp.yaml: {expected}"


def test_folder_names_are_safe_slugs_and_keep_safe_labels():
    from adrun.config import cell_folder, folder_name

    assert folder_name("patchcore") == "patchcore"
    assert folder_name("pc-r18_v2.1") == "pc-r18_v2.1"
    for label in ("patchcore[weights=/a/b.pth]", "patchcore[weights=../../x.pth]", "..", "a b$c", "x" * 200):
        name = folder_name(label)
        assert "/" not in name and ".." not in name and len(name) <= 80
        assert name[0].isalnum() and all(ch.isalnum() or ch in "_.=,+-" for ch in name), name
    # Two labels that slug alike still get two folders.
    assert folder_name("p[w=/a/b]") != folder_name("p[w=/a_b]")
    assert cell_folder("patchcore[w=/a]", "tile", 7).startswith("runs/patchcore_w=_a-")
    assert cell_folder("patchcore[w=/a]", "tile", 7).endswith("/tile/seed-7")


def test_seeds_example_is_small_offline_and_three_seeds():
    experiment = load_experiment(CONFIGS / "seeds.yaml")
    assert experiment.seed_values() == [0, 1, 2]
    demo = load_experiment(CONFIGS / "demo.yaml")
    assert experiment.data.categories == demo.data.categories and experiment.data.format == "synthetic"
    (model,) = experiment.models
    assert model.name == "patchcore" and model.pre_trained is False and model.weights is None
    cells = expand(experiment, experiment.data.categories)
    assert len(cells) == 9 and {c.folder.rsplit("/", 1)[1] for c in cells} == {"seed-0", "seed-1", "seed-2"}
