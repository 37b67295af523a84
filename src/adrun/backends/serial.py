"""The default backend: one cell after the other, in this process.

``trainer.devices`` goes to Lightning as it is (a count or a list of GPU indices).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from adrun.backends.base import Event, Interrupts, Report, run_one
from adrun.errors import from_wire

if TYPE_CHECKING:
    from adrun.config import Cell


class SerialBackend:
    name = "serial"

    def run(self, cells: Sequence[Cell], root: Path, exp_dir: Path, report: Report) -> None:
        with Interrupts() as interrupts:
            for number, cell in enumerate(cells, start=1):
                report(Event("started", cell, number, len(cells)))
                result = run_one(cell, root, exp_dir)
                interrupts.arm()  # Lightning may have taken SIGINT during the fit
                stop = report(Event("finished", cell, number, len(cells), record=result.record))
                if result.stopped:
                    raise KeyboardInterrupt
                if result.abort:
                    raise from_wire(result.abort)
                if stop:
                    return
