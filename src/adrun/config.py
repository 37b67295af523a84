"""The experiment schema, YAML loading, ``--set`` overrides and grid expansion into cells.

Errors come in layers: ``yaml.safe_load``, then pydantic. Every pydantic error is
rendered as one line naming the key, the problem and the fix, and raised as a
``ConfigError``; only the CLI turns that into an exit code.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import importlib.util
import itertools
import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from adrun import __version__
from adrun.datasets import FORMAT_NAMES
from adrun.errors import ConfigError
from adrun.models import MODEL_NAMES, ModelConfig, spec
from adrun.schema import NAME_PATTERN, TrainerConfig
from adrun.schema import Strict as _Strict
from adrun.wording import plural

# Cells in one sweep at most: a grid past it is a typo or a job for several configs.
MAX_CELLS = 10_000
# Keys of a model entry that describe data or training, not the model's constructor.
NON_MODEL_KEYS = {"name", "label", "train_batch_size", "eval_batch_size", "image_size", "trainer"}
# What anomalib's Evaluator computes on request (registry.METRICS builds them): image_* from
# the image scores and labels, pixel_* from the anomaly maps and masks.
METRIC_NAMES = (
    "image_AUROC",
    "pixel_AUROC",
    "image_F1Max",
    "pixel_F1Max",
    "pixel_AUPRO",
    "image_AUPR",
    "pixel_AUPR",
    "image_F1Score",
    "pixel_F1Score",
)
# The field's usual four (MVTec AD papers report these); F1Max is threshold-free, F1Score
# depends on anomalib's adaptive threshold.
DEFAULT_METRICS = ("pixel_AUROC", "image_AUROC", "pixel_AUPRO", "image_F1Max")
AUPRO_FPR_LIMIT = 0.3  # anomalib's default and the MVTec AD paper's integration limit
LOGGER_NAMES = ("tensorboard", "mlflow", "csv")
# The package each logger needs (pip install 'adrun[track]').
LOGGER_PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "csv": None}


class SyntheticConfig(_Strict):
    """Sizes of the generated dataset for ``format: synthetic``."""

    image_size: int = Field(128, ge=32, le=1024)
    # The images' own seed, apart from the experiment's seeds: every model seed is
    # tested on the same images, so the spread across seeds is the model's alone.
    seed: int = Field(42, ge=0)
    n_train: int = Field(16, ge=1)
    n_test_good: int = Field(6, ge=1)
    n_test_defect: int = Field(3, ge=1)


class DataConfig(_Strict):
    # One of adrun.datasets.FORMATS: each format's layout, checks and anomalib datamodule live there.
    format: str = "mvtec"
    # For format synthetic, root defaults to <output>/<name>/data (generated there).
    root: Path | None = None
    categories: list[str] | Literal["all"] = Field(default_factory=lambda: ["tile", "leather", "grid"])
    train_batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(32, ge=1)
    num_workers: int = Field(4, ge=0)
    # Image extensions read by format folder (the others read what their anomalib reader reads).
    extensions: list[str] = Field(default_factory=lambda: [".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"])
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)
    # A category with no test/good images: anomalib then moves 20% of train/good into the
    # test set (seeded). adrun refuses that unless asked, and the record keeps the choice.
    test_good_from_train: bool = False

    @field_validator("format")
    @classmethod
    def _format(cls, value):
        if value not in FORMAT_NAMES:
            raise _unknown("data format", value, FORMAT_NAMES)
        return value

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


def _unknown(kind: str, name: Any, choices: tuple[str, ...]) -> ValueError:
    hint = difflib.get_close_matches(str(name), choices, n=1)
    fix = f"did you mean {hint[0]!r}?" if hint else f"choose one of {', '.join(choices)}"
    return ValueError(f"unknown {kind}; {fix}")


class MetricConfig(_Strict):
    """One metric for anomalib's Evaluator: a name, plus settings where the metric has any."""

    name: str
    # pixel_AUPRO only: the false-positive rate up to which the PRO curve is integrated.
    # None: 0.3, anomalib's default, filled in so the record and the cell key always hold it.
    fpr_limit: float | None = Field(None, gt=0, le=1)

    @field_validator("name")
    @classmethod
    def _known(cls, value):
        if value not in METRIC_NAMES:
            raise _unknown("metric", value, METRIC_NAMES)
        return value

    @model_validator(mode="after")
    def _settings(self):
        if self.name == "pixel_AUPRO":
            if self.fpr_limit is None:
                self.fpr_limit = AUPRO_FPR_LIMIT
        elif self.fpr_limit is not None:
            raise ValueError(f"fpr_limit applies to pixel_AUPRO only; remove it from {self.name}")
        return self

    def settings(self) -> dict[str, Any]:
        """The settings that change this metric's value (fpr_limit for AUPRO), for the record."""
        return self.model_dump(exclude={"name"}, exclude_none=True)


class LoggerConfig(_Strict):
    """An optional Lightning logger for every cell (``pip install 'adrun[track]'``).

    It records what the cell computes and never changes it, so it stays out of the cell key.
    Everything it writes goes under the experiment folder: ``logs/<name>/`` for tensorboard
    and csv, an MLflow file store at ``mlruns/`` unless ``tracking_uri`` names a server.
    """

    name: str
    # mlflow: an http(s):// tracking server. None: a local file store in <exp>/mlruns.
    tracking_uri: str | None = None
    # mlflow: the MLflow experiment the runs go to. None: the adrun experiment's name.
    experiment_name: str | None = None
    # mlflow: tags set on every run.
    tags: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, value):
        if value not in LOGGER_NAMES:
            raise _unknown("logger", value, LOGGER_NAMES)
        return value

    @model_validator(mode="after")
    def _options(self):
        if self.name != "mlflow":
            given = [k for k in ("tracking_uri", "experiment_name", "tags") if k in self.model_fields_set]
            if given:
                raise ValueError(f"{given[0]} applies to the mlflow logger only; remove it")
        if self.tracking_uri is not None and not re.match(r"^https?://", self.tracking_uri):
            # A local store elsewhere would be a write outside the output folder.
            raise ValueError(
                "tracking_uri must be an http(s):// server; leave it out for a file store under the experiment folder"
            )
        return self


class SmokeConfig(_Strict):
    """The ``--smoke`` subset: same experiment, a few images, one epoch or a few steps."""

    n_train: int = Field(4, ge=1)
    n_test_per_label: int = Field(1, ge=1)
    max_steps: int = Field(2, ge=1)


MAX_SEED = 2**32 - 1  # Lightning's seed_everything takes 0 .. 2**32 - 1


def _check_seed(value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("expected an integer or {grid: [0, 1, 2]}")
    if not 0 <= value <= MAX_SEED:
        raise ValueError(f"a seed lies in 0 .. {MAX_SEED} (Lightning's seed_everything)")
    return value


class SeedGrid(_Strict):
    grid: list[Annotated[int, Field(ge=0, le=MAX_SEED)]] = Field(min_length=1)


class Experiment(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    # One seed, or one cell per seed: {grid: [0, 1, 2]} (or the seeds: list below).
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] | SeedGrid = 42
    seeds: list[Annotated[int, Field(ge=0, le=MAX_SEED)]] | None = Field(None, min_length=1)
    output: Path = Path("results")
    data: DataConfig = Field(default_factory=DataConfig)
    models: list[ModelConfig] = Field(min_length=1)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    smoke: SmokeConfig = Field(default_factory=SmokeConfig)
    # Each a name (pixel_AUROC) or a mapping with settings ({name: pixel_AUPRO, fpr_limit: 0.3}).
    metrics: list[MetricConfig] = Field(default_factory=lambda: [MetricConfig(name=n) for n in DEFAULT_METRICS])
    logger: LoggerConfig | None = None
    # The model entries as written, grids included; model_entries() expands them.
    _raw_models: list[dict] = PrivateAttr(default_factory=list)
    # The file it was read from, for messages that name it (`adrun fetch <file>`).
    _source: str | None = PrivateAttr(None)

    @field_validator("metrics", mode="before")
    @classmethod
    def _metric_names(cls, value):
        if isinstance(value, list):
            return [{"name": item} if isinstance(item, str) else item for item in value]
        return value

    @field_validator("logger", mode="before")
    @classmethod
    def _logger_name(cls, value):
        return {"name": value} if isinstance(value, str) else value  # logger: mlflow

    @field_validator("logger")
    @classmethod
    def _logger_installed(cls, value):
        # Checked here, not on the cell: `adrun test` of a tracked run needs no tracker.
        package = LOGGER_PACKAGES[value.name] if value is not None else None
        if package and importlib.util.find_spec(package) is None:
            raise ValueError(f"{value.name} is not installed; pip install 'adrun[track]', or remove logger:")
        return value

    @field_validator("metrics")
    @classmethod
    def _metric_list(cls, value):
        if not value:
            raise ValueError(f"needs at least one metric, e.g. {', '.join(DEFAULT_METRICS)}")
        names = [m.name for m in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"{twice[0]} is listed twice; keep one")
        return value

    @field_validator("seed", mode="before")
    @classmethod
    def _seed_shape(cls, value):
        # Checked whole here, so a bad value reads as one line, not as pydantic's union internals.
        if isinstance(value, dict):
            grid = value.get("grid") if set(value) == {"grid"} else None
            if not isinstance(grid, list) or not grid:
                raise ValueError("expected an integer or {grid: [0, 1, 2]} (a non-empty list of seeds)")
            for seed in grid:
                _check_seed(seed)
            return value
        return _check_seed(value)

    @model_validator(mode="after")
    def _one_seed_setting(self):
        if self.seeds is not None and "seed" in self.model_fields_set:
            raise ValueError(
                "seed and seeds are both set; keep one (several seeds: seeds: [0, 1, 2], or seed: {grid: [0, 1, 2]})"
            )
        values = self.seed_values()
        if len(set(values)) != len(values):
            raise ValueError(f"seeds: {values} repeats a seed; list each seed once")
        return self

    def seed_values(self) -> list[int]:
        """The seeds to run, in file order: one cell per seed."""
        if self.seeds is not None:
            return list(self.seeds)
        return list(self.seed.grid) if isinstance(self.seed, SeedGrid) else [self.seed]


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
    metrics: list[MetricConfig] = Field(default_factory=lambda: [MetricConfig(name=n) for n in DEFAULT_METRICS])
    logger: LoggerConfig | None = None

    @property
    def key(self) -> str:
        """Hash of what decides the result: model, data, trainer, seed, smoke, metrics, adrun version."""
        # Positions and the list of other categories do not change this cell's result:
        # adding a category to a sweep must not rerun the finished ones. The logger only
        # watches. The metric set is in: a record must hold every metric asked for.
        payload = self.model_dump(
            mode="json",
            exclude={"index": True, "category_index": True, "data": {"categories", "num_workers"}, "logger": True},
        )
        if not payload["data"].get("test_good_from_train"):
            del payload["data"]["test_good_from_train"]  # off: the keys of cells made before it stay
        for key, default in spec(self.model.name).unkeyed_defaults.items():
            if payload["model"].get(key) == default:
                del payload["model"][key]
        payload["metrics"] = sorted(payload["metrics"], key=lambda m: m["name"])
        payload["adrun"] = __version__
        blob = json.dumps(payload, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @property
    def folder(self) -> str:
        """Where the cell's files go, relative to the experiment folder: one folder per seed."""
        return cell_folder(self.label, self.category, self.seed)

    @property
    def train_batch_size(self) -> int:
        return self.model.train_batch_size or self.data.train_batch_size

    @property
    def eval_batch_size(self) -> int:
        return self.model.eval_batch_size or self.data.eval_batch_size


# --------------------------------------------------------------------------- loading


def _refuse_duplicate_keys(loader: yaml.SafeLoader, root: yaml.Node) -> None:
    """Raise where one mapping of ``root`` holds a key twice.

    Plain YAML loaders keep the last value without a word, so a sweep would silently
    run with half of what the file says. Keys are built by ``loader`` (SafeLoader's own
    constructors); every mapping is visited once, aliases included.
    """
    pending, visited = [root], set()
    while pending:
        node = pending.pop()
        if id(node) in visited or isinstance(node, yaml.ScalarNode):
            continue
        visited.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            pending.extend(node.value)
            continue
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            pending.extend((key_node, value_node))
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` and then a key of base: an override YAML allows
            key = loader.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # an unhashable key: SafeLoader reports it itself
            if first is not None:  # each mapping is visited once: a second sighting is a second key
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} appears twice in one mapping (first at line {first})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line + 1


def safe_load(text: str) -> Any:
    """``yaml.safe_load``, refusing duplicate keys: PyYAML's own SafeLoader, no subclass of it."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        _refuse_duplicate_keys(loader, root)
        return loader.construct_document(root)
    finally:
        loader.dispose()


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file; pass the path of an experiment YAML (see configs/)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at line {line}); save the file as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    try:
        raw = safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "somewhere"
        problem = getattr(exc, "problem", None) or "invalid YAML"
        fix = "keep one of them" if "appears twice" in problem else "fix the YAML syntax there"
        raise ConfigError(f"{path}: {problem} at {where}; {fix}") from None
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
            value = safe_load(text) if text.strip() else None
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


def load_experiment(
    path: str | Path | None = None, overrides: list[str] | None = None, raw: dict[str, Any] | None = None
) -> Experiment:
    """Read, override and validate an experiment; every problem becomes a ``ConfigError``."""
    source = str(path) if path is not None else "config"
    if raw is None:
        if path is None:
            raise ConfigError("no config: pass the path of an experiment YAML (see configs/)")
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
        sizes = [grid_size(m) for m in models if isinstance(m, dict)]
        if len(sizes) > 1 and sum(sizes) > MAX_CELLS and max(sizes) <= MAX_CELLS:
            problems.append(f"models: {_too_many(sum(sizes), 'their grids')}")
            models = []
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
    experiment._raw_models = copy.deepcopy(models or [])
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
    schema = spec(name).config
    problems: list[str] = []
    for values in _grid_values(entry, where, problems):
        try:
            TypeAdapter(schema).validate_python(values)
        except ValidationError as exc:
            problems += [f"{where}.{p}" for p in _render(exc, schema)]
    return _dedupe(problems)


def _is_grid(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"grid"}


def grid_size(entry: dict) -> int:
    """How many models a model entry's grids expand to, counted without expanding them."""
    return math.prod(len(v["grid"]) for v in entry.values() if _is_grid(v) and isinstance(v["grid"], list))


def _too_many(n: int, what: str) -> str:
    return (
        f"{what} expand to {n:,} cells, more than adrun runs in one sweep ({MAX_CELLS:,}); "
        "use fewer grid values, or split the sweep into several configs"
    )


def _grid_values(entry: dict, where: str = "models", problems: list | None = None) -> list[dict]:
    """All combinations of a model entry's ``{grid: [...]}`` values, in file order."""
    keys = [k for k, v in entry.items() if _is_grid(v)]
    for k in keys:
        if not isinstance(entry[k]["grid"], list) or not entry[k]["grid"]:
            if problems is not None:
                problems.append(f"{where}.{k}.grid: expected a non-empty list of values")
            return []
    if grid_size(entry) > MAX_CELLS:  # counted first: expanding and validating them all takes minutes
        if problems is not None:
            problems.append(f"{where}: {_too_many(grid_size(entry), 'its grids')}")
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
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "none_required": "null",
}


def _union_line(where: str, errs: list[Any]) -> str:
    """One line for every branch of a union rejecting a value: what it takes, what it got."""
    wanted = [_EXPECTED.get(e["type"]) or e["msg"].removeprefix("Input should be ") for e in errs]
    got = errs[0].get("input")
    return f"{where}: expected {' or '.join(dict.fromkeys(wanted))} (got {got!r})"


def _render(exc: ValidationError, schema: type[BaseModel]) -> list[str]:
    """One readable line per pydantic error, with the closest valid key for typos."""
    lines: list[str] = []
    unions: dict[str, list[Any]] = {}  # pydantic's ErrorDetails of each union's branches
    for err in exc.errors():
        loc = [str(p) for p in err["loc"] if not str(p).startswith("function-")]
        # Drop the discriminator tags pydantic inserts for the model union (the model names).
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
        if not loc and kind == "value_error":  # a check across keys; its message names them
            lines.append(err["msg"].removeprefix("Value error, "))
        elif kind == "extra_forbidden":
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


SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=,+-]{0,79}")


def folder_name(name: str) -> str:
    """A folder name for a label or category: the name itself where it is safe, else a slug plus a hash.

    Grid labels are built from raw values (``<model>[weights=/a/b.pth]``), so a label can
    hold ``/``, ``..``, ``[`` or anything else; the hash keeps two such labels apart.
    """
    if SAFE_NAME.fullmatch(name) and ".." not in name:
        return name
    slug = re.sub(r"[^A-Za-z0-9_.=,+-]+", "_", name).replace("..", "_").strip("._-=,+")[:60]
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
    return f"{slug}-{digest}" if slug else digest


def cell_folder(label: str, category: str, seed: int) -> str:
    """``runs/<label>/<category>/seed-<N>``, each part a safe folder name; the one naming rule."""
    return f"runs/{folder_name(label)}/{folder_name(category)}/seed-{int(seed)}"


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
        raise ConfigError(f"models: label {duplicates[0]!r} is used twice; give one of them a distinct 'label:'")
    return out


def expand(experiment: Experiment, categories: list[str], smoke: bool = False) -> list[Cell]:
    """Model x category x seed cells. ``categories`` is the resolved list (``all`` already expanded).

    Seed first: after the first seed's cells the whole table has a value in every place.
    """
    raw = experiment._raw_models or []
    seeds = experiment.seed_values()
    n = sum(grid_size(m) for m in raw if isinstance(m, dict)) * len(categories) * len(seeds)
    if n > MAX_CELLS:
        what = f"{n // (len(categories) * len(seeds)):,} models x {len(categories)} categories x {len(seeds)} seeds"
        raise ConfigError(f"models x data.categories: {_too_many(n, what)}")
    cells = []
    entries = model_entries(experiment)
    for seed in experiment.seed_values():
        for index, (label, model) in enumerate(entries):
            trainer = experiment.trainer.model_copy(
                update=model.trainer.model_dump(exclude_unset=True, exclude_none=True)
            )
            for category_index, category in enumerate(categories):
                cells.append(_cell(experiment, label, index, category_index, category, seed, smoke, model, trainer))
    return cells


def _cell(experiment, label, index, category_index, category, seed, smoke, model, trainer) -> Cell:
    return Cell(
        experiment=experiment.name,
        label=label,
        index=index,
        category_index=category_index,
        category=category,
        seed=seed,
        smoke=smoke,
        model=model,
        data=experiment.data,
        trainer=trainer,
        smoke_settings=experiment.smoke,
        metrics=experiment.metrics,
        logger=experiment.logger,
    )


def experiment_dir(experiment: Experiment, smoke: bool = False) -> Path:
    """``<output>/<name>``, or ``<output>/smoke/<name>`` so smoke results never mix with real ones."""
    base = Path(experiment.output)
    return base / "smoke" / experiment.name if smoke else base / experiment.name
