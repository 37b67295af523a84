"""The ``adrun`` command line: parse arguments, call the library, map errors to exit codes.

Exit codes: 0 success, 1 a cell failed while running, 2 bad input (config, data,
weights, paths) reported as one line per problem. ``--debug`` shows tracebacks.
anomalib, torch and lightning are imported inside the commands that need them, so
``adrun --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from typer.core import TyperArgument, TyperCommand, TyperOption

from adrun import __version__, errors
from adrun.errors import AdrunError
from adrun.precision import ask_for_huge_pages
from adrun.wording import duration, plural

if TYPE_CHECKING:
    from adrun.backends import Event

# anomalib's tqdm bars (coreset, teacher statistics) would tear through rich's progress.
# `adrun fetch` wants the download bars back, unless the user asked for silence.
_USER_TQDM = "TQDM_DISABLE" in os.environ
os.environ.setdefault("TQDM_DISABLE", "1")
ask_for_huge_pages()  # before anything imports torch

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="adrun: run anomalib experiments from YAML, per category, into pixel-AUROC tables.",
)
_state = {"debug": False}
# The reference tables shipped with adrun (compare.py reads them), named in --compare's help.
_REFERENCES = sorted(p.stem for p in (Path(__file__).parent / "references").glob("*.csv"))

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config key, validated like the file: key.path=value (repeatable)."),
]
SmokeOption = Annotated[
    bool,
    typer.Option("--smoke", help="Same experiment on a tiny subset (a few images, a few steps); results under smoke/."),
]
RootOption = Annotated[
    Path | None,
    typer.Option("--root", envvar="ADRUN_DATA_ROOT", help="Dataset root (overrides data.root)."),
]
OutputOption = Annotated[Path | None, typer.Option("--output", help="Results folder (overrides output).")]
VerifyOption = Annotated[
    bool,
    typer.Option("--verify-images", help="Decode every image in full before the first cell (default: headers only)."),
]


class Backend(enum.StrEnum):
    local = "local"
    ray = "ray"


def _fail(message: str, code: int) -> None:
    for line in message.splitlines() or [message]:
        typer.echo(f"adrun: error: {line}", err=True)
    raise typer.Exit(code)


def handles_errors(command):
    """Turn domain errors into one line per problem and exit code 2 (traceback with --debug)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except AdrunError as exc:
            if _state["debug"]:
                raise
            _fail(str(exc), 2)
        except OSError as exc:
            # A path the user gave that cannot be written or read (a file where a folder
            # should be, a read-only disk): one line naming it, as for any bad input.
            if _state["debug"] or exc.filename is None:
                raise
            _fail(f"{exc.filename}: {exc.strerror or exc}; check that path (--debug shows where it was used)", 2)

    return wrapper


def _version(value: bool) -> None:
    if value:
        typer.echo(f"adrun {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks instead of one-line errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """adrun: run anomalib experiments from YAML, per category, into pixel-AUROC tables."""
    _state["debug"] = debug
    errors.DEBUG = debug  # for what runs below the CLI (Ray's connection log); reset by every command


def _console():
    from rich.console import Console

    return Console(stderr=False, highlight=False)


def _e(value) -> str:
    """A user's string (path, category, label, error) as rich shows it: ``[`` is text, not markup."""
    from rich.markup import escape

    return escape(str(value))


def _overrides(sets: list[str] | None, root: Path | None, output: Path | None) -> list[str]:
    out = list(sets or [])
    if root is not None:
        out.append(f"data.root={root}")
    if output is not None:
        out.append(f"output={output}")
    return out


def _run_plan(
    the_plan,
    force: bool = False,
    fail_fast: bool = False,
    jobs: int = 1,
    backend: str = "local",
    address: str | None = None,
) -> None:
    """Run a plan with per-cell progress, then print the summary table; exit 1 if a cell failed."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from adrun import sweep

    console = _console()
    console.print(
        f"[bold]{_e(the_plan.experiment.name)}[/]: {plural(len(the_plan.cells), 'cell')} -> {_e(the_plan.exp_dir)}"
        + (" [yellow](smoke)[/]" if the_plan.smoke else "")
    )
    seconds, known, todo = sweep.estimate(the_plan, force)
    if known:
        others = f"; {plural(todo - known, 'other cell')} never ran with these settings" if known < todo else ""
        console.print(
            f"expected: about {duration(seconds)}, from the last runs of {plural(known, 'cell')} with "
            f"these settings{others}"
        )
    started = time.perf_counter()
    from adrun.models import spec_of

    noted: set[str] = set()
    for cell in the_plan.cells:  # each model's warnings, once (named by the first label that has them)
        for note in spec_of(cell.model).notes(cell.model):
            if note not in noted:
                noted.add(note)
                console.print(f"[yellow]note[/]: {_e(cell.label)} {_e(note)}")
    if the_plan.experiment.data.test_good_from_train:
        console.print(
            "[yellow]note[/]: data.test_good_from_train: true: where test/good is empty, anomalib "
            "moves 20% of train/good into the test set."
        )
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    task = progress.add_task("starting", total=len(the_plan.cells))
    running: dict[str, str] = {}  # the cells running now (by folder), with the node each runs on
    several_seeds = len({c.seed for c in the_plan.planned}) > 1

    def cell_name(cell) -> str:
        return f"{cell.label} / {cell.category}" + (f" / seed {cell.seed}" if several_seeds else "")

    def on_event(event: Event) -> None:
        cell, record = event.cell, event.record
        name = _e(cell_name(cell))
        if event.kind == "started":
            if event.attempt > 1:
                progress.console.print(
                    f"  [yellow]retry[/] {name}: attempt {event.attempt} on {_e(event.node)} "
                    "(the node of the last one was lost)"
                )
            running[cell.folder] = f"{name} @ {_e(event.node)}" if event.node else name
            progress.update(task, description=", ".join(running.values()))
            return
        assert record is not None  # skipped and finished cells come with their record
        running.pop(cell.folder, None)
        progress.update(task, description=", ".join(running.values()) or "done")
        if event.kind == "skipped":
            progress.console.print(f"  [dim]skip[/] {name}: finished earlier with the same config")
        elif event.status == "interrupted":
            progress.console.print(f"  [yellow]stop[/] {name}: interrupted")
        elif event.status == "failed":
            log = f"{cell.folder}/log.txt"
            progress.console.print(f"  [red]FAIL[/] {name}: {_e(record['error'])} (see {_e(log)})")
        else:
            m = record["metrics"]

            def shown(key: str) -> str:  # n/a, as the tables say, for a metric the model does not give
                return f"{m[key]:.3f}" if isinstance(m.get(key), int | float) else "n/a"

            progress.console.print(
                f"  [green]ok[/]   {name}: pixel_AUROC {shown('pixel_AUROC')}  "
                f"image_AUROC {shown('image_AUROC')}  ({record['seconds']['total']:.1f} s"
                + (f" @ {_e(record['node'])})" if record.get("node") else ")")
            )
        progress.advance(task)

    try:
        with contextlib.ExitStack() as stack:
            cluster = None
            if backend == "ray":
                from adrun.backends.ray import session

                # The one session of this sweep: the Ray backend runs on it.
                cluster = stack.enter_context(session(address))
                console.print(_e(cluster.summary()))
                console.print(
                    f"ray dashboard: {_e(cluster.dashboard_url)}"
                    if cluster.dashboard_url
                    else "ray dashboard: none (the head node runs without one)"
                )
                if cluster.auth_warning:
                    console.print(f"[yellow]warning[/]: {_e(cluster.auth_warning)}")
            with progress:
                outcome = sweep.execute(
                    the_plan,
                    force=force,
                    on_event=on_event,
                    fail_fast=fail_fast,
                    jobs=jobs,
                    backend=backend,
                    address=address,
                    cluster=cluster,
                )
    except KeyboardInterrupt:
        console.print(
            "[yellow]interrupted[/]: the current cell is recorded as interrupted and the tables are "
            "up to date; run the same command again to resume."
        )
        raise typer.Exit(130) from None
    _print_summary(console, outcome.tables, the_plan.exp_dir)
    ran = len(outcome.records) + len(outcome.failed)
    console.print(
        f"{plural(ran, 'cell')} ran in {duration(time.perf_counter() - started)} (wall time)"
        + (f", {len(outcome.skipped)} finished earlier" if outcome.skipped else "")
    )
    if outcome.failed:
        console.print(f"[red]{plural(len(outcome.failed), 'cell')} failed:[/]")
        for record in outcome.failed:
            console.print(_e(f"  {record['label']} / {record['category']}: {record['error']}"))
        raise typer.Exit(1)


def _print_summary(console, tables, exp_dir: Path) -> None:
    """Pixel and image AUROC, then how many records on disk were left out and why."""
    for name in ("pixel_auroc", "image_auroc"):
        _print_table(console, tables.get(name), exp_dir)
    if note := tables.selection.summary():
        console.print(note, markup=False)


def _print_table(console, table, exp_dir: Path) -> None:
    from rich.markup import escape
    from rich.table import Table

    if table is None:
        return
    console.print(f"[bold]{escape(table.title)}[/]  ({escape(str(exp_dir))})")
    view = Table()
    view.add_column("category")
    for column in table.mean.columns:
        view.add_column(escape(str(column)), justify="right")
    for name, row in table.strings().iterrows():
        view.add_row(f"[bold]{name}[/]" if name == "mean" else escape(str(name)), *row)
    console.print(view)
    console.print(table.footer(), markup=False)


@app.command()
@handles_errors
def sweep(
    config: Annotated[Path, typer.Argument(help="Experiment YAML (see configs/).")],
    sets: SetOption = None,
    smoke: SmokeOption = False,
    root: RootOption = None,
    output: OutputOption = None,
    force: Annotated[bool, typer.Option("--force", help="Rerun cells that already finished.")] = False,
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only",
            help="Run only the matching cells: LABEL/CATEGORY or LABEL, a "
            "label as written (grid labels too) or a glob over labels and model names: "
            "MODEL/t* picks every cell of that model on tile (repeatable).",
        ),
    ] = None,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Stop at the first failing cell.")] = False,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs",
            "-j",
            min=1,
            help="Cells run at once, each in its own process (threads split); "
            "with --backend ray, cells at once per CPU node.",
        ),
    ] = 1,
    backend: Annotated[
        Backend,
        typer.Option(
            "--backend", help="local: this machine; ray: each cell a Ray task on a cluster (pip install 'adrun[ray]')."
        ),
    ] = Backend.local,
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            help="With --backend ray: auto (the cluster `ray start` made here, "
            "or $RAY_ADDRESS) or HOST:PORT of the head node.",
        ),
    ] = None,
    verify_images: VerifyOption = False,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait", help="If another sweep runs on the same experiment folder, wait for it instead of stopping."
        ),
    ] = False,
) -> None:
    """Run every model x category cell of a config.

    Writes a record per cell and the experiment's tables.

    Cells that finished earlier with the same resolved config are skipped.
    One sweep at a time per experiment folder: a second one stops (or waits, with --wait).
    With --backend ray every node must see the dataset and the output folder at the same paths
    (docs/many-machines.md).
    """
    from adrun import config as cfg
    from adrun import sweep as sweep_lib

    if address is not None and backend is not Backend.ray:
        raise AdrunError("--address: only with --backend ray")
    experiment = cfg.load_experiment(config, _overrides(sets, root, output))
    with sweep_lib.locked(experiment, smoke=smoke, wait=wait, on_wait=_waiting):
        the_plan = sweep_lib.plan(experiment, smoke=smoke, only=only, verify_images=verify_images)
        _run_plan(the_plan, force=force, fail_fast=fail_fast, jobs=jobs, backend=backend.value, address=address)


def _waiting(holder: str) -> None:
    typer.echo(f"waiting for the other sweep on this experiment folder ({holder}) to finish", err=True)


@app.command()
@handles_errors
def train(
    model: Annotated[str, typer.Option("--model", help="Registry name; `adrun models` lists them.")],
    category: Annotated[str, typer.Option("--category", help="Category folder under the dataset root.")],
    config: Annotated[
        Path | None, typer.Option("--config", help="Take this model's settings (and data, trainer) from a config.")
    ] = None,
    root: RootOption = None,
    output: OutputOption = None,
    sets: SetOption = None,
    smoke: SmokeOption = False,
    verify_images: VerifyOption = False,
) -> None:
    """Fit and test one model on one category.

    Without --config: anomalib's defaults for the model on MVTec AD at --root.
    """
    from adrun import config as cfg
    from adrun import sweep as sweep_lib

    if config is not None:
        raw = cfg.read_yaml(config)
        models = [m for m in raw.get("models") or [] if isinstance(m, dict)]
        entries = [m for m in models if m.get("name") == model]
        if not entries:
            names = ", ".join(str(m.get("name")) for m in models)
            raise cfg.ConfigError(f"{config}: has no model {model!r}; its models: {names}")
        raw["models"] = entries
    else:
        from adrun.models import SPECS

        entry = {"name": model, **(SPECS[model].standalone if model in SPECS else {})}
        raw = {"name": "train", "data": {"format": "mvtec"}, "models": [entry]}
    raw.setdefault("data", {})
    raw["data"] = {**(raw["data"] or {}), "categories": [category]}
    experiment = cfg.load_experiment(config, raw=raw, overrides=_overrides(sets, root, output))
    with sweep_lib.locked(experiment, smoke=smoke):
        _run_plan(sweep_lib.plan(experiment, smoke=smoke, verify_images=verify_images), force=True)


@app.command("test")
@handles_errors
def test_command(run: Annotated[Path, typer.Argument(help="A run folder: <exp>/runs/<label>/<category>.")]) -> None:
    """Test a cell again from its checkpoint.

    Refreshes the cell's record and the experiment's tables.
    """
    from adrun.run import exp_dir_of, test_run
    from adrun.tables import write_tables

    record = test_run(run)
    write_tables(exp_dir_of(run))
    m = record["metrics"]
    typer.echo(f"{record['label']} / {record['category']}: " + "  ".join(f"{k} {v:.4f}" for k, v in m.items()))


@app.command()
@handles_errors
def predict(
    run: Annotated[Path, typer.Argument(help="A run folder: <exp>/runs/<label>/<category>.")],
    source: Annotated[Path, typer.Argument(metavar="INPUT", help="An image or a folder of images.")],
    output: Annotated[
        Path | None, typer.Option("--output", help="Where to write scores.csv and overlays (default RUN/predictions).")
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold",
            help="An image is anomalous when its score is above this, on the "
            "scale of scores.csv; masks use it on the map (default: the cell's own).",
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option("--batch-size", min=1, help="Images per forward pass (default: the cell's eval batch size)."),
    ] = None,
    masks: Annotated[
        bool, typer.Option("--masks", help="Also write each image's predicted mask, <name>_mask.png.")
    ] = False,
) -> None:
    """Score images with a trained cell.

    Writes scores.csv (path, image score, predicted label) and one anomaly-map overlay PNG per
    image, in folders that mirror INPUT's: INPUT/hole/000.png -> OUT/hole/000_anomaly.png.
    """
    from adrun.run import predict as predict_run

    done = predict_run(run, source, output, threshold=threshold, batch_size=batch_size, masks=masks)
    if done.anomalous is None:
        verdict = "no threshold (the cell has none: its fit never validated); pass --threshold to label them"
    else:
        verdict = f"{done.anomalous} anomalous (score above {done.threshold:.4g}: {done.threshold_source})"
    typer.echo(f"{plural(done.images, 'image')}: {verdict}")
    files = "scores.csv, overlays" + (", masks" if done.masks else "")
    typer.echo(f"wrote {files} to {done.out}")


@app.command()
@handles_errors
def table(
    results: Annotated[Path, typer.Argument(help="An experiment folder: <output>/<name>.")],
    compare: Annotated[
        list[str] | None,
        typer.Option(
            "--compare",
            metavar="NAME",
            help=f"Also compare with a shipped reference: {', '.join(_REFERENCES)} (repeatable).",
        ),
    ] = None,
    show_all: Annotated[
        bool, typer.Option("--all", help="List every record on disk, with the settings that differ as columns.")
    ] = False,
    against: Annotated[
        Path | None,
        typer.Option(
            "--against",
            metavar="OTHER",
            help="Compare with another experiment folder, cell by cell: Δ with a bootstrap interval.",
        ),
    ] = None,
    resamples: Annotated[int, typer.Option("--resamples", help="Bootstrap resamples for --against.")] = 1000,
) -> None:
    """Rebuild an experiment's tables from its records.

    The tables show the cells of the most recent sweep's plan (plan.json), mean ± std over their seeds.
    Rewrites metrics.csv, <metric>.{csv,md} per metric, pixel_auroc.png and report.html.
    With --compare NAME: per category and model, ours, the reference and the delta, plus the mean,
    into compare_NAME.md and compare_NAME.csv. Comparisons made earlier are refreshed too.
    With --all: every record on disk (all_records.{md,csv}), whatever plan it came from.
    With --against OTHER: this experiment minus OTHER per category, with a 95% bootstrap interval and
    a verdict, into compare_against_OTHER.{md,csv}.
    """
    from adrun.errors import RunError
    from adrun.tables import write_tables

    if not (results / "runs").is_dir():
        raise RunError(f"{results}: no runs/ folder; pass an experiment folder such as results/demo")
    if against is not None:
        from adrun import against as against_lib

        against_lib.names(results, against)  # bad input fails before any file is written
        if not (against / "runs").is_dir():
            raise RunError(f"--against {against}: no runs/ folder; pass another experiment folder")
    tables = write_tables(results, compare=compare or [])
    console = _console()
    if show_all:
        _print_all(console, results)
    else:
        _print_summary(console, tables, results)
        if tables.selection.plan is None:
            typer.echo(f"no {results / 'plan.json'}: every record is shown (run a sweep to write the plan)")
    for name in compare or []:
        typer.echo("")
        typer.echo((results / f"compare_{name}.md").read_text(encoding="utf-8"), nl=False)
    if against is not None:
        from adrun import against as against_lib

        _, md, seconds = against_lib.write(results, against, resamples=resamples)
        typer.echo("")
        typer.echo(md.read_text(encoding="utf-8"), nl=False)
        typer.echo(f"wrote {md} and {md.with_suffix('.csv')} ({seconds:.1f} s of resampling)")
    typer.echo(f"\nwrote {results / 'report.html'}")


def _print_all(console, results: Path) -> None:
    """Every record on disk, with the differing settings; also written to all_records.{md,csv}."""
    from rich.markup import escape
    from rich.table import Table

    from adrun.records import atomic_write_text
    from adrun.tables import all_markdown, all_records

    frame = all_records(results)
    atomic_write_text(results / "all_records.csv", frame.to_csv(index=False, float_format="%.6f"))
    atomic_write_text(results / "all_records.md", all_markdown(frame, results.name))
    view = Table(
        title=escape(f"every record  ({results})"),
        caption="columns between status and the metrics: the settings that differ",
    )
    for column in frame.columns:
        view.add_column(escape(str(column)), justify="right" if frame[column].dtype.kind == "f" else "left")
    for _, row in frame.iterrows():
        view.add_row(*(("–" if pd_isna(v) else f"{v:.3f}") if isinstance(v, float) else escape(str(v)) for v in row))
    console.print(view)


def pd_isna(value) -> bool:
    return value != value  # NaN


@app.command()
@handles_errors
def export(
    run: Annotated[Path, typer.Argument(help="A run folder: <exp>/runs/<label>/<category>.")],
    fmt: Annotated[str, typer.Option("--format", help="torch (.pt), onnx (.onnx) or openvino (.xml + .bin).")],
    output: Annotated[
        Path | None, typer.Option("--output", help="Folder for <format>/model.* (default RUN/export).")
    ] = None,
) -> None:
    """Export a trained cell's model through anomalib's Engine.export.

    onnx and openvino need the optional extra: pip install 'adrun[export]'.
    """
    from adrun.export import check_format, export_run

    check_format(fmt)  # before loading anything heavy
    typer.echo(f"wrote {export_run(run, fmt, output)}")


@app.command("make-data")
@handles_errors
def make_data(
    out: Annotated[Path, typer.Argument(help="Folder to write <category>/train, test, ground_truth into.")],
    categories: Annotated[
        list[str] | None, typer.Option("--categories", help="Categories to write (repeatable). Default: all.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed: same seed, same files.")] = 0,
    image_size: Annotated[int, typer.Option("--image-size", help="Image side in pixels.")] = 128,
    n_train: Annotated[int, typer.Option("--n-train", help="Training (good) images per category.")] = 16,
) -> None:
    """Write the synthetic dataset in MVTec AD layout.

    Tile, leather and grid textures with scratch, hole, stain and broken-pattern defects and exact masks.
    """
    from adrun import synthetic

    names = categories or list(synthetic.CATEGORIES)
    unknown = [c for c in names if c not in synthetic.CATEGORIES]
    if unknown:
        raise AdrunError(f"--categories: unknown {unknown[0]!r}; choose from {', '.join(synthetic.CATEGORIES)}")
    for option, value, least in (("--image-size", image_size, 32), ("--n-train", n_train, 1), ("--seed", seed, 0)):
        if value < least:
            raise AdrunError(f"{option} {value}: must be at least {least}")
    synthetic.make_dataset(out, names, seed=seed, image_size=image_size, n_train=n_train)
    typer.echo(f"wrote {', '.join(names)} to {out}")


@app.command()
@handles_errors
def doctor(
    config: Annotated[Path | None, typer.Argument(help="Experiment YAML: also check each of its cells.")] = None,
    sets: SetOption = None,
    root: RootOption = None,
) -> None:
    """Show versions, the accelerator, the caches and the network; with a config, whether each cell can run.

    Exits 2 when any cell of the config cannot run, naming what is missing and its fixes.
    """
    from rich.table import Table
    from rich.text import Text

    from adrun import config as cfg
    from adrun import preflight

    console = _console()
    plain = not sys.stdout.isatty()  # piped or captured: no styles, nothing cut to a width
    for name, value in preflight.environment():
        # Whole lines, never a table cell: the cache paths are what users copy files into.
        if plain:
            typer.echo(f"{name}: {value}")
        else:
            console.print(Text.assemble((name, "bold"), ": ", value), soft_wrap=True)
    if config is None:
        return
    experiment = cfg.load_experiment(config, _overrides(sets, root, None))
    reports = preflight.doctor_cells(experiment)
    names = list(dict.fromkeys(k for r in reports for k in r.checks))  # dataset, then each model's needs
    columns = ("cell", *names, "ready")
    title = f"{experiment.name}: {plural(len(reports), 'cell')}"
    if plain:
        rows = [
            [f"{r.label}/{r.category}", *(_shown(r.checks.get(k)) for k in columns[1:-1]), "yes" if r.ready else "no"]
            for r in reports
        ]
        _print_rows(title, list(columns), rows)
    else:
        view = Table(title=_e(title))
        for column in columns:
            view.add_column(column, overflow="fold")
        for r in reports:
            shown = [_mark(r.checks.get(k)) for k in columns[1:-1]]
            view.add_row(_e(f"{r.label}/{r.category}"), *shown, "[green]yes[/]" if r.ready else "[red]no[/]")
        console.print(view)
    problems = preflight.problems(reports)
    if problems:
        _fail("\n".join(problems), 2)
    console.print("every cell can run")


def _shown(check) -> str:
    return "–" if check is None else check.detail


@app.command()
@handles_errors
def models() -> None:
    """List the models adrun can run.

    For each: its registry name, anomalib class, the weights it needs and how it runs offline.
    """
    from adrun.models import SPECS

    for spec in SPECS.values():
        typer.echo(f"{spec.name}  ({spec.anomalib_class})")
        typer.echo(f"  {spec.summary}")
        typer.echo(f"  weights: {spec.weights}")
        typer.echo(f"  offline: {spec.offline}")
        typer.echo(f"  image size: {spec.image_size} px by default")


def _mark(check) -> str:
    if check is None:
        return "–"
    return f"[green]{_e(check.detail)}[/]" if check.ok else f"[red]{_e(check.detail)}[/]"


@app.command()
@handles_errors
def fetch(
    config: Annotated[Path, typer.Argument(help="Experiment YAML whose cells' weights and data to download.")],
    sets: SetOption = None,
    root: RootOption = None,
    with_data: Annotated[
        bool, typer.Option("--data/--no-data", help="Also download MVTec AD categories missing under data.root.")
    ] = True,
) -> None:
    """Download what a config's cells need into the standard caches, for copying to an offline machine.

    Uses timm's and anomalib's own download code; items already present are skipped.
    See docs/offline.md for which folders to copy.
    """
    if not _USER_TQDM:
        os.environ.pop("TQDM_DISABLE", None)  # show the download bars
    from adrun import config as cfg
    from adrun import fetch as fetch_lib

    console = _console()
    experiment = cfg.load_experiment(config, _overrides(sets, root, None))

    def on_item(item, status):
        if status == "present":
            console.print(f"  [dim]have[/] {_e(item.kind)} {_e(item.name)} ({_e(item.target)})")
        elif status == "start":
            console.print(f"  [bold]get[/]  {_e(item.kind)} {_e(item.name)} -> {_e(item.target)}")
        else:
            console.print(f"  [green]ok[/]   {_e(item.kind)} {_e(item.name)}")

    todo = fetch_lib.fetch(experiment, with_data=with_data, on_item=on_item)
    console.print(f"{plural(len(todo), 'item')} in place; copy the caches to the offline machine (docs/offline.md)")


@app.command()
@handles_errors
def status(
    results: Annotated[Path, typer.Argument(help="An experiment folder: <output>/<name>.")],
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", help="Compare the keys with this config's cells (default: the last sweep's plan.json, if any)."
        ),
    ] = None,
    sets: SetOption = None,
    root: RootOption = None,
) -> None:
    """List an experiment's cells: done, failed, interrupted, running or stale, with keys, seeds and times.

    Stale: the record's key no longer matches its cell's (settings or adrun changed); a sweep reruns it.
    With --config, the config's cells without a record show as "not run".
    """
    from adrun import status as status_lib

    cells = None
    if config is not None:
        cells = _config_cells(config, _overrides(sets, root, None), results)
    found, against = status_lib.states(results, cells)
    counts: dict[str, int] = {}
    for cell in found:
        counts[cell.state] = counts.get(cell.state, 0) + 1
    compared = {
        "config": f"keys compared with {config}",
        "plan": "keys compared with the last sweep's plan.json",
        None: "no config or plan.json to compare keys with (pass --config)",
    }[against]
    summary = ", ".join(f"{n} {state}" for state, n in counts.items()) or "no cells"
    columns = ["cell", "seed", "state", "key", "started", "seconds"]
    rows = [
        [
            f"{c.label}/{c.category}",
            "–" if c.seed is None else str(c.seed),
            c.state,
            c.key or "–",
            c.started or "–",
            "–" if c.seconds is None else f"{c.seconds:.1f}",
        ]
        for c in found
    ]
    _print_rows(f"{results}: {plural(len(found), 'cell')} ({summary}); {compared}", columns, rows)
    for c in found:
        if c.state == "failed" and c.error:
            typer.echo(f"  {c.label}/{c.category}: {c.error}")


def _config_cells(config: Path, overrides: list[str], results: Path):
    """The cells ``config`` gives for the experiment folder ``results`` (categories resolved as a sweep does)."""
    from adrun import config as cfg
    from adrun import data

    experiment = cfg.load_experiment(config, overrides)
    smoke = results.parent.name == "smoke"
    if experiment.name != results.name:
        raise AdrunError(
            f"--config {config}: is experiment {experiment.name!r}, but {results} holds "
            f"{results.name!r}; pass that experiment's config"
        )
    categories = experiment.data.categories
    if categories == "all":
        if experiment.data.format == "synthetic":
            from adrun import synthetic

            categories = list(synthetic.CATEGORIES)
        else:
            categories = data.discover(data.dataset_root(experiment.data, results), experiment.data)
    return cfg.expand(experiment, list(categories), smoke=smoke)


def _print_rows(title: str, columns: list[str], rows: list[list[str]]) -> None:
    """A table: aligned plain text when stdout is not a terminal, a rich table otherwise; nothing cut."""
    if not sys.stdout.isatty():
        typer.echo(title)
        widths = [max(len(row[i]) for row in [columns, *rows]) for i in range(len(columns))]
        for row in [columns, *rows]:
            typer.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        return
    from rich.table import Table
    from rich.text import Text

    view = Table(title=Text(title))
    for column in columns:
        view.add_column(column, overflow="fold")
    for row in rows:
        view.add_row(*(Text(v) for v in row))
    _console().print(view)


# --------------------------------------------------------------------------- help text

# Value names in the usual Unix spelling; typer's own are <list[str]>, <path> and {config}.
OPTION_METAVARS = {
    "--set": "KEY=VALUE",
    "--only": "PATTERN",
    "--address": "HOST:PORT",
    "--model": "NAME",
    "--category": "NAME",
    "--categories": "NAME",
    "--format": "FORMAT",
}


def _type_metavar(param) -> str:
    kind = param.type_descriptor.annotation
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return "|".join(str(m.value) for m in kind)
    bare = param.bare_type()  # "Path", "int", "list[str]"
    return {"Path": "PATH", "int": "N", "float": "X"}.get(bare.removeprefix("list[").removesuffix("]"), "TEXT")


class _Command(TyperCommand):
    """A command whose help reads ``adrun sweep [OPTIONS] CONFIG`` and ``--set KEY=VALUE``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param, TyperArgument):
                param.metavar = param.metavar or param.name.upper()
                param.display_type_rich = lambda ctx: None  # type: ignore[method-assign]  # CONFIG, RUN, OUT say it
            elif isinstance(param, TyperOption) and not param.is_flag and param.metavar is None:
                param.metavar = OPTION_METAVARS.get(param.opts[0]) or _type_metavar(param)

    def collect_usage_pieces(self, ctx):
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                pieces.append(str(param.metavar) if param.required else f"[{param.metavar}]")
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces


for _info in app.registered_commands:
    if _info.cls in (None, TyperCommand):
        _info.cls = _Command


def run() -> None:  # pragma: no cover - console entry point wrapper
    app(prog_name="adrun")


if __name__ == "__main__":  # pragma: no cover
    run()
