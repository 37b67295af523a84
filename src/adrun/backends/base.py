"""What every backend shares: the ``Backend`` protocol, its one ``Event``, one cell's run.

A backend receives the cells to run, the dataset root and the experiment folder, and a
``report`` callback. It calls ``report(Event("started", ...))`` when a cell starts (again
for a retry, with ``attempt`` 2 and up) and ``report(Event("finished", ..., record=...))``
once per started cell with its final record. ``report`` returns True when the sweep wants
no new cell started (``--fail-fast``); cells already running still finish.

The failure rule is ``adrun.errors.aborts_sweep``, applied in ``run_one`` wherever the cell
runs: an aborting error (a full disk) travels back as ``abort``, every other exception is a
``failed`` record. The backend then starts no new cell, lets the running ones finish, and
raises the error. After a first Ctrl-C it stops the running cells (recorded ``interrupted``)
and raises ``KeyboardInterrupt``.

A backend never imports ``adrun.sweep``: the sweep uses backends, not the other way round.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal, Protocol

from adrun.errors import WireError, aborts_sweep, to_wire
from adrun.records import now, run_dir, write_record
from adrun.run import base_record, one_line, run_cell

if TYPE_CHECKING:
    from adrun.config import Cell

Record = dict[str, Any]
Sink = Callable[[Path, Record], None]


@dataclass(frozen=True)
class Event:
    """A cell started (``record`` None) or finished (``record``: its final record).

    ``number`` counts cells in the order they started, 1 to ``total``. ``node`` is where
    the cell runs when the backend knows (Ray); ``attempt`` is 2 and up for a retry.
    ``skipped`` comes from the sweep, not a backend: a finished cell it did not run again.
    """

    kind: Literal["started", "finished", "skipped"]
    cell: Cell
    number: int
    total: int
    record: Record | None = None
    node: str | None = None
    attempt: int = 1

    @property
    def status(self) -> str:
        """``running`` for a start; otherwise the record's status (``success``, ``failed``, ...)."""
        return self.record["status"] if self.record is not None else "running"


Report = Callable[[Event], bool]


class Backend(Protocol):
    """Runs cells somewhere and reports each one's start and result through ``report``."""

    name: str

    def run(self, cells: Sequence[Cell], root: Path, exp_dir: Path, report: Report) -> None:
        """Run ``cells``; raise the first aborting error or ``KeyboardInterrupt`` after reporting."""
        ...


@dataclass
class Result:
    """What one cell's run sends back: its final record and, if it must stop the sweep, the error."""

    record: Record
    abort: WireError | None = None
    stopped: bool = False  # a Ctrl-C reached this run: the sweep starts no new cell

    @property
    def status(self) -> str:
        return self.record["status"]


def run_one(cell: Cell, root: Path, exp_dir: Path, sink: Sink = write_record, pinned_gpu: bool = False) -> Result:
    """Run one cell where this process is and apply the failure rule; never raises for a cell's error.

    ``pinned_gpu``: the backend gave this process one GPU (``CUDA_VISIBLE_DEVICES``), so a
    ``trainer.devices`` list means that one device.
    """
    kept: dict[str, Record] = {}

    def keep(folder: Path, record: Record) -> None:
        kept["record"] = record
        sink(folder, record)

    devices = 1 if pinned_gpu and isinstance(cell.trainer.devices, list) else None
    abort, stopped = None, False
    try:
        run_cell(cell, Path(root), Path(exp_dir), sink=keep, devices=devices)
    except KeyboardInterrupt:
        stopped = True
        record = kept.get("record")
        if record is None:  # before run_cell wrote its first record
            kept["record"] = dead_record(cell, root, "interrupted by the user", status="interrupted")
        elif record["status"] == "running":  # while it wrote that "running" record, before its own try
            record.update(status="interrupted", error="interrupted by the user", finished_at=now())
        # Written again whatever the status: the signal may have cut the last write short (a
        # finished cell's record stays its own, and the sweep still stops).
        with contextlib.suppress(OSError):
            sink(folder_of(cell, exp_dir), kept["record"])
    except Exception as exc:
        if kept.get("record", {}).get("status") in (None, "running"):
            # Failed before run_cell's own try (or its first record write failed): the
            # record to book is this failure, never whatever record.json held before.
            kept["record"] = dead_record(cell, root, one_line(exc))
        if aborts_sweep(exc):
            abort = to_wire(exc)  # type: ignore[arg-type]  # aborts_sweep: an AdrunError
    return Result(kept["record"], abort, stopped)


def dead_record(
    cell: Cell, root: Path, error: str, status: str = "failed", started_at: str | None = None, **where: Any
) -> Record:
    """The record of a cell whose own run could not write one: its worker or node died
    (``--jobs``: killed mid-cell; Ray: retries used up), or it was stopped before it began.

    ``where``: what the backend knows of where it ran (``node``, ``attempts``, ``pid``,
    ``cuda_visible_devices``), over the driver's own values.
    """
    record = base_record(cell, Path(root))
    record.update(status=status, error=error, finished_at=now(), **where)
    if started_at:
        record["started_at"] = started_at
    return record


def folder_of(cell: Cell, exp_dir: Path) -> Path:
    return run_dir(Path(exp_dir), cell.folder)


class Interrupts:
    """First SIGINT: raise KeyboardInterrupt (or call ``on_first``); second: exit at once.

    Lightning ignores SIGINT while it shuts a fit down, so ``arm()`` is called again
    after each cell to take the signal back.
    """

    def __init__(self, on_first: Callable[[], None] | None = None, on_second: Callable[[], None] | None = None):
        self.count = 0
        self.on_first = on_first
        self.on_second = on_second
        self._previous: Any = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.count >= 2:
            if self.on_second:
                self.on_second()
            os._exit(130)
        if self.on_first:
            self.on_first()
        else:
            raise KeyboardInterrupt

    def arm(self) -> None:
        signal.signal(signal.SIGINT, self._handle)

    def __enter__(self) -> Interrupts:
        self._previous = signal.getsignal(signal.SIGINT)
        self.arm()
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        signal.signal(signal.SIGINT, self._previous)
        return False
