"""The few domain exceptions a user can see, and the one rule for which abort a sweep.

The CLI turns every ``AdrunError`` into one line on stderr and exit code 2;
``--debug`` shows the traceback instead.

In a sweep, an exception from one cell either fails that cell (a ``failed`` record, the
sweep goes on, exit code 1 at the end) or aborts the sweep (no new cell starts, exit code
2): ``aborts_sweep`` decides, the same way for every backend. Only an error that every
later cell would hit too aborts: a full disk. Missing weights, bad images or a crash in
anomalib fail their cell, since the next cell may well run.
"""

from __future__ import annotations

from typing import ClassVar, TypedDict

# --debug, as the CLI last set it: code below the CLI shows what it would otherwise hold
# back (Ray's own connection log). In this process only, never passed to children.
DEBUG = False


class AdrunError(Exception):
    """A problem the user can fix: the message names the problem and the fix."""

    # True: raised by one cell, it stops the whole sweep (see ``aborts_sweep``).
    aborts_sweep: ClassVar[bool] = False


class ConfigError(AdrunError):
    """The experiment config (file or ``--set``) is invalid."""


class DataError(AdrunError):
    """The dataset is missing or not in the expected layout."""


class WeightsError(AdrunError):
    """Model weights (backbone, teacher, checkpoint) are missing or do not fit."""


class RunError(AdrunError):
    """A run directory or record is missing or unusable."""


class DiskFullError(AdrunError):
    """The disk filled up while a cell was writing; names the cell."""

    aborts_sweep = True  # every later cell would fail the same way


class ClusterError(AdrunError):
    """``--backend ray``: Ray is missing, the cluster is unreachable, or a node cannot see the files."""


class CompareError(AdrunError):
    """A ``--compare`` reference table is unknown or unreadable."""


class ExportError(AdrunError):
    """An export format is unknown or its optional dependencies are missing."""


class DatasetMissing(RuntimeError):
    """A cell's dataset folder vanished after the preflight.

    Not an ``AdrunError`` on purpose: like any error inside a cell it fails that cell
    (one line in its record) and the sweep goes on.
    """


def aborts_sweep(exc: BaseException) -> bool:
    """The rule: does ``exc``, raised while one cell ran, stop the sweep (True) or fail the cell?"""
    return isinstance(exc, AdrunError) and exc.aborts_sweep


class WireError(TypedDict):
    """An ``AdrunError`` as it crosses a process or Ray boundary: its class by name, its message."""

    type: str
    message: str


def to_wire(exc: AdrunError) -> WireError:
    return {"type": type(exc).__name__, "message": str(exc)}


def from_wire(wire: WireError) -> AdrunError:
    """The same error on this side of the boundary: same class (when adrun knows it), same message."""
    known = {cls.__name__: cls for cls in _subclasses(AdrunError)}
    return known.get(wire["type"], AdrunError)(wire["message"])


def _subclasses(cls: type[AdrunError]) -> list[type[AdrunError]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out += _subclasses(sub)
    return out
