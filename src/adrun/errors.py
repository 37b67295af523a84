"""The few domain exceptions a user can see.

The CLI turns every ``AdrunError`` into one line on stderr and exit code 2;
``--debug`` shows the traceback instead.
"""


class AdrunError(Exception):
    """A problem the user can fix: the message names the problem and the fix."""


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
