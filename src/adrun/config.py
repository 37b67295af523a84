"""The experiment schema, YAML loading, ``--set`` overrides and grid expansion into cells.

Errors come in layers: ``yaml.safe_load``, then pydantic. Every pydantic error is
rendered as one line naming the key, the problem and the fix, and raised as a
``ConfigError``; only the CLI turns that into an exit code.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import itertools
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from adrun import __version__
from adrun.errors import ConfigError
from adrun.wording import plural

MODEL_NAMES = ("patchcore", "efficient_ad")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
# Keys of a model entry that describe data or training, not the model's constructor.
NON_MODEL_KEYS = {"name", "label", "train_batch_size", "eval_batch_size", "image_size", "trainer"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class SyntheticConfig(_Strict):
    """Sizes of the generated dataset for ``format: synthetic``."""

    image_size: int = Field(128, ge=32, le=1024)
    n_train: int = Field(16, ge=1)
    n_test_good: int = Field(6, ge=1)
    n_test_defect: int = Field(3, ge=1)


class DataConfig(_Strict):
    format: Literal["mvtec", "folder", "synthetic"] = "mvtec"
    # For format synthetic, root defaults to <output>/<name>/data (generated there).
    root: Path | None = None
    categories: list[str] | Literal["all"] = Field(default_factory=lambda: ["tile", "leather", "grid"])
    train_batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(32, ge=1)
    num_workers: int = Field(4, ge=0)
    # Image extensions read by format folder (mvtec reads .png only, as anomalib does).
    extensions: list[str] = Field(default_factory=lambda: [".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"])
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)

    @field_validator("categories")
    @classmethod
    def _names(cls, value):
        if isinstance(value, list):
            if not value:
                raise ValueError("needs at least one category, or 'all'")
            for name in value:
                if not re.match(NAME_PATTERN, name):
                    raise ValueError(f"{name!r} is not a folder name")
        return value


class TrainerConfig(_Strict):
    """The Lightning Trainer arguments adrun passes through."""

    accelerator: str = "auto"
    devices: int | str = 1
    max_epochs: int | None = None
    max_steps: int | None = None
    precision: str | int | None = None
    check_val_every_n_epoch: int | None = None
    limit_train_batches: int | float | None = None


class _ModelBase(_Strict):
    label: str | None = Field(None, pattern=NAME_PATTERN)
    # None: the model's own default (256 px for both).
    image_size: int | None = Field(None, ge=32)
    train_batch_size: int | None = Field(None, ge=1)
    eval_batch_size: int | None = Field(None, ge=1)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)


class PatchcoreConfig(_ModelBase):
    name: Literal["patchcore"]
    # anomalib's defaults. The real-data configs name "wide_resnet50_2.tv_in1k", the
    # torchvision weights the PatchCore paper used; timm's bare name resolves elsewhere.
    backbone: str = "wide_resnet50_2"
    layers: list[str] = Field(default_factory=lambda: ["layer2", "layer3"])
    # true: timm's pretrained weights from the Hugging Face cache (downloaded when
    # missing and online). false: untrained backbone, an explicit choice the record keeps.
    pre_trained: bool = True
    # A local state dict (.pth/.pt/.safetensors) of the timm backbone: no hub access at
    # all, for machines without internet. Overrides the cache; see docs/offline.md.
    weights: Path | None = None
    coreset_sampling_ratio: float = Field(0.1, gt=0, le=1)
    num_neighbors: int = Field(9, ge=1)
    # fast: adrun's exact sampler (same picks); anomalib: the stock KCenterGreedy.
    coreset: Literal["fast", "anomalib"] = "fast"
    # Center crop after resize, as in the paper (256 -> 224). None: no crop.
    center_crop: int | None = Field(None, ge=32)

    @field_validator("weights")
    @classmethod
    def _weights_file(cls, value, info: ValidationInfo):
        if value is None:
            return value
        if value.suffix not in (".pth", ".pt", ".safetensors"):
            raise ValueError("must be a .pth, .pt or .safetensors state dict file")
        # A file loaded into a backbone declared untrained would hide one of the two wishes.
        if info.data.get("pre_trained") is False:
            raise ValueError("contradicts pre_trained: false; drop one of the two")
        return value


class EfficientAdConfig(_ModelBase):
    name: Literal["efficient_ad"]
    model_size: Literal["small", "medium"] = "small"
    # auto: anomalib's cache and download; random: a seeded random teacher (smoke
    # tests only); or a path to pretrained_teacher_<size>.pth.
    teacher: str = "auto"
    # A folder with at least one class subfolder of images (ImageFolder), or
    # "builtin": photos shipped with scikit-image, assembled under the output folder.
    imagenet_dir: str = "./datasets/imagenette"
    teacher_out_channels: int = 384
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    padding: bool = False
    pad_maps: bool = True

    @field_validator("image_size")
    @classmethod
    def _at_least_256(cls, value):
        # Smaller inputs crash inside EfficientAd's autoencoder (fixed-size decoder).
        if value is not None and value < 256:
            raise ValueError("must be at least 256 for efficient_ad (its autoencoder decodes to 256 px)")
        return value


ModelConfig = Annotated[PatchcoreConfig | EfficientAdConfig, Field(discriminator="name")]


class SmokeConfig(_Strict):
    """The ``--smoke`` subset: same experiment, a few images, one epoch or a few steps."""

    n_train: int = Field(4, ge=1)
    n_test_per_label: int = Field(1, ge=1)
    max_steps: int = Field(2, ge=1)


class Experiment(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    seed: int = 42
    output: Path = Path("results")
    data: DataConfig = Field(default_factory=DataConfig)
    models: list[ModelConfig] = Field(min_length=1)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    smoke: SmokeConfig = Field(default_factory=SmokeConfig)
    # The model entries as written, grids included; model_entries() expands them.
    _raw_models: list[dict] = PrivateAttr(default_factory=list)
    # The file it was read from, for messages that name it (`adrun fetch <file>`).
    _source: str | None = PrivateAttr(None)


class Cell(_Strict):
    """One model x category run, fully resolved: everything a run needs and records."""

    experiment: str
    label: str
    index: int  # position of the model entry (after grid expansion): table column order
    category_index: int = 0  # position of the category: table row order
    category: str
    seed: int
    smoke: bool = False
    model: ModelConfig
    data: DataConfig
    trainer: TrainerConfig
    smoke_settings: SmokeConfig

    @property
    def key(self) -> str:
        """Hash of what decides the result: model, data, trainer, seed, smoke, adrun version."""
        # Positions and the list of other categories do not change this cell's result:
        # adding a category to a sweep must not rerun the finished ones.
        payload = self.model_dump(
            mode="json", exclude={"index": True, "category_index": True, "data": {"categories", "num_workers"}}
        )
        payload["adrun"] = __version__
        blob = json.dumps(payload, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @property
    def train_batch_size(self) -> int:
        return self.model.train_batch_size or self.data.train_batch_size

    @property
    def eval_batch_size(self) -> int:
        return self.model.eval_batch_size or self.data.eval_batch_size


# --------------------------------------------------------------------------- loading


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file; pass the path of an experiment YAML (see configs/)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "somewhere"
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: {problem} at {where}; fix the YAML syntax there") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with name, data, models; got {type(raw).__name__}")
    return raw


def apply_overrides(raw: dict[str, Any], overrides: list[str], source: str = "--set") -> dict[str, Any]:
    """Apply ``key.path=value`` overrides; values are parsed as YAML (``0.01``, ``[a, b]``)."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{source} {item!r}: expected key.path=value, e.g. data.root=/data/mvtec")
        key, _, text = item.partition("=")
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"{source} {item!r}: empty key; expected key.path=value")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        node: Any = raw
        for depth, part in enumerate(parts[:-1]):
            node = _step(node, part, parts[: depth + 1], item, source, create=True)
        last = parts[-1]
        if isinstance(node, list):
            index = _index(node, last, item, source)
            node[index] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"{source} {item!r}: {'.'.join(parts[:-1])} is not a mapping or list")
    return raw


def _step(node: Any, part: str, path: list[str], item: str, source: str, create: bool) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, item, source)]
    if isinstance(node, dict):
        if part not in node or node[part] is None:
            node[part] = {}
        return node[part]
    raise ConfigError(f"{source} {item!r}: {'.'.join(path[:-1])} is not a mapping or list")


def _index(node: list, part: str, item: str, source: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"{source} {item!r}: {part!r} is not an index of a list with {plural(len(node), 'item')}")
    return int(part)


def load_experiment(path: str | Path | None = None, overrides: list[str] | None = None,
                    raw: dict[str, Any] | None = None) -> Experiment:
    """Read, override and validate an experiment; every problem becomes a ``ConfigError``."""
    source = str(path) if path is not None else "config"
    if raw is None:
        raw = read_yaml(path)
    raw = apply_overrides(raw, overrides or [])
    experiment = validate(raw, source, overrides or [])
    experiment._source = str(path) if path is not None else None
    return experiment


def validate(raw: dict[str, Any], source: str = "config", overrides: list[str] | tuple[str, ...] = ()) -> Experiment:
    """Validate ``raw``; each problem is named after its origin: a ``--set`` item, else ``source``."""
    problems: list[str] = []
    models = raw.get("models")
    # Validate each model entry against its own schema so an unknown model name or key
    # names the right candidates; grid values are checked one by one after expansion.
    if isinstance(models, list):
        for i, entry in enumerate(models):
            problems += _model_problems(entry, f"models.{i}")
    shell = dict(raw)
    if isinstance(models, list) and not problems:
        shell["models"] = [_first_of_grid(m) for m in models]
    try:
        experiment = Experiment.model_validate(shell)
    except ValidationError as exc:
        # Broken model entries were reported above, each against its own schema.
        problems += [p for p in _render(exc, Experiment) if not (p.startswith("models.") and problems)]
    if problems:
        raise ConfigError("\n".join(_origin(p, source, overrides) for p in _dedupe(problems)))
    experiment._raw_models = copy.deepcopy(models)
    return experiment


def _origin(problem: str, source: str, overrides: list[str] | tuple[str, ...]) -> str:
    """``--set KEY: ...`` when a ``--set`` item wrote the key at fault, else ``SOURCE: ...``."""
    where = problem.partition(": ")[0].split(".")
    for item in overrides:
        key = [p for p in item.partition("=")[0].strip().split(".") if p]
        # The key itself, something inside the value it set, or a mapping it created.
        if key and (where[: len(key)] == key or (len(where) > 1 and key[: len(where)] == where)):
            return f"--set {problem}"
    return f"{source}: {problem}"


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _model_problems(entry: Any, where: str) -> list[str]:
    if not isinstance(entry, dict):
        return [f"{where}: expected a mapping with a name ({', '.join(MODEL_NAMES)})"]
    name = entry.get("name")
    if name not in MODEL_NAMES:
        hint = difflib.get_close_matches(str(name), MODEL_NAMES, n=1)
        did = f" (did you mean {hint[0]!r}?)" if hint else ""
        return [f"{where}.name: unknown model {name!r}{did}; choose one of {', '.join(MODEL_NAMES)}"]
    schema = PatchcoreConfig if name == "patchcore" else EfficientAdConfig
    problems = []
    for values in _grid_values(entry, where, problems):
        try:
            TypeAdapter(schema).validate_python(values)
        except ValidationError as exc:
            problems += [f"{where}.{p}" for p in _render(exc, schema)]
    return _dedupe(problems)


def _is_grid(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"grid"}


def _grid_values(entry: dict, where: str = "models", problems: list | None = None) -> list[dict]:
    """All combinations of a model entry's ``{grid: [...]}`` values, in file order."""
    keys = [k for k, v in entry.items() if _is_grid(v)]
    for k in keys:
        if not isinstance(entry[k]["grid"], list) or not entry[k]["grid"]:
            if problems is not None:
                problems.append(f"{where}.{k}.grid: expected a non-empty list of values")
            return []
    combos = itertools.product(*(entry[k]["grid"] for k in keys))
    return [{**entry, **dict(zip(keys, combo, strict=True))} for combo in combos]


def _first_of_grid(entry: dict) -> dict:
    values = _grid_values(entry)
    return values[0] if values else entry


# pydantic names each branch of a union in the error's location (``devices.int``,
# ``categories.list[str]``); no field of adrun's schema is named like that.
_UNION_BRANCH = re.compile(r"^(int|str|float|bool|bytes|none|list|dict|.*\[.*\])$")
_EXPECTED = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number", "string_type": "a string",
    "bool_type": "true or false", "bool_parsing": "true or false", "list_type": "a list",
    "dict_type": "a mapping", "none_required": "null",
}


def _union_line(where: str, errs: list[dict]) -> str:
    """One line for every branch of a union rejecting a value: what it takes, what it got."""
    wanted = [_EXPECTED.get(e["type"]) or e["msg"].removeprefix("Input should be ") for e in errs]
    got = errs[0].get("input")
    return f"{where}: expected {' or '.join(dict.fromkeys(wanted))} (got {got!r})"


def _render(exc: ValidationError, schema: type[BaseModel]) -> list[str]:
    """One readable line per pydantic error, with the closest valid key for typos."""
    lines: list[str] = []
    unions: dict[str, list[dict]] = {}
    for err in exc.errors():
        loc = [str(p) for p in err["loc"] if not str(p).startswith("function-")]
        # Drop discriminator tags pydantic inserts for unions ("patchcore", "efficient_ad").
        loc = [p for p in loc if p not in MODEL_NAMES]
        where = ".".join(loc) or "(top level)"
        branchless = [p for p in loc if not _UNION_BRANCH.match(p)]
        if branchless != loc:
            where = ".".join(branchless) or "(top level)"
            if where not in unions:
                lines.append(where)  # a placeholder, replaced by the union's one line below
            unions.setdefault(where, []).append(err)
            continue
        kind = err["type"]
        if kind == "extra_forbidden":
            valid = _fields_at(schema, loc[:-1])
            hint = difflib.get_close_matches(loc[-1], valid, n=1)
            fix = f"did you mean {hint[0]!r}?" if hint else f"valid keys: {', '.join(sorted(valid))}"
            lines.append(f"{where}: unknown key; {fix}")
        elif kind == "missing":
            lines.append(f"{where}: required key is missing; add it")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            got = err.get("input")
            shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
            lines.append(f"{where}: {msg}{shown}")
    return [_union_line(line, unions[line]) if line in unions else line for line in lines]


def _fields_at(schema: type[BaseModel], loc: list[str]) -> list[str]:
    """The field names of the sub-model at ``loc`` (best effort, for typo hints)."""
    model: Any = schema
    for part in loc:
        if part.isdigit():
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            return []
        model = nested[0]
    return list(getattr(model, "model_fields", {}))


# --------------------------------------------------------------------------- cells


def cell_label(entry: dict, grid_keys: list[str]) -> str:
    base = entry.get("label") or entry["name"]
    if not grid_keys:
        return base
    return base + "[" + ",".join(f"{k}={entry[k]}" for k in grid_keys) + "]"


def model_entries(experiment: Experiment) -> list[tuple[str, ModelConfig]]:
    """(label, validated model config) for every model after grid expansion, in file order."""
    raw_models = experiment._raw_models or [m.model_dump(mode="json", exclude_none=True) for m in experiment.models]
    out: list[tuple[str, ModelConfig]] = []
    adapter = TypeAdapter(ModelConfig)
    for entry in raw_models:
        grid_keys = [k for k, v in entry.items() if _is_grid(v)]
        for values in _grid_values(entry):
            out.append((cell_label(values, grid_keys), adapter.validate_python(values)))
    labels = [label for label, _ in out]
    duplicates = sorted({x for x in labels if labels.count(x) > 1})
    if duplicates:
        raise ConfigError(
            f"models: label {duplicates[0]!r} is used twice; give one of them a distinct 'label:'"
        )
    return out


def expand(experiment: Experiment, categories: list[str], smoke: bool = False) -> list[Cell]:
    """Model x category cells. ``categories`` is the resolved list (``all`` already expanded)."""
    cells = []
    for index, (label, model) in enumerate(model_entries(experiment)):
        trainer = experiment.trainer.model_copy(
            update=model.trainer.model_dump(exclude_unset=True, exclude_none=True)
        )
        for category_index, category in enumerate(categories):
            cells.append(
                Cell(
                    experiment=experiment.name,
                    label=label,
                    index=index,
                    category_index=category_index,
                    category=category,
                    seed=experiment.seed,
                    smoke=smoke,
                    model=model,
                    data=experiment.data,
                    trainer=trainer,
                    smoke_settings=experiment.smoke,
                )
            )
    return cells


def experiment_dir(experiment: Experiment, smoke: bool = False) -> Path:
    """``<output>/<name>``, or ``<output>/smoke/<name>`` so smoke results never mix with real ones."""
    base = Path(experiment.output)
    return base / "smoke" / experiment.name if smoke else base / experiment.name
