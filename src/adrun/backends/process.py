"""``--jobs N``: a pool of N worker processes (``python -m adrun.backends.worker``), kept for the whole sweep.

Each worker imports anomalib once and then runs cell after cell, so a cell costs its fit,
not a fresh interpreter's imports. Tasks and results travel as JSON lines over two private
pipes per worker (passed with ``pass_fds``), never over stdout, where libraries print.

* Threads: each worker gets ``cores // N`` (``OMP_NUM_THREADS`` and ``torch.set_num_threads``).
* GPUs: worker ``k`` gets one GPU, round robin (``CUDA_VISIBLE_DEVICES``): from the cells'
  ``trainer.devices`` list when they give one, else every GPU this process can see.
* A worker writes its cell's records itself, atomically, and dies with the sweep
  (``PR_SET_PDEATHSIG``): a killed sweep leaves whole files and resumes.
* A worker killed mid-cell (out of memory, SIGKILL) gives that cell a ``failed`` record; a
  fresh worker takes its place for the remaining cells.
* Ctrl-C: workers run in their own sessions, so a terminal's Ctrl-C reaches only the sweep,
  which forwards one SIGINT to each busy worker: their cells end ``interrupted``. A second
  Ctrl-C kills the workers and exits at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from adrun.backends.base import Event, Interrupts, Record, Report, Result, dead_record, folder_of
from adrun.errors import ConfigError, WireError, from_wire
from adrun.records import RECORD, write_record

if TYPE_CHECKING:
    from adrun.config import Cell

# How long idle workers get to exit after their task pipe closes, before a SIGKILL.
EXIT_TIMEOUT_S = 30


def gpus(cells: Sequence[Cell], visible: str | None = None) -> list[str]:
    """The GPUs to hand out, as ``CUDA_VISIBLE_DEVICES`` values; empty on a CPU-only machine.

    A ``trainer.devices`` list names indices among the GPUs this process sees (as Lightning
    reads it), so with ``CUDA_VISIBLE_DEVICES=4,5`` set, ``[1]`` is GPU 5.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    seen = [d.strip() for d in visible.split(",") if d.strip()] if visible is not None else None
    lists = {str(c.trainer.devices): c for c in cells if isinstance(c.trainer.devices, list)}
    if len(lists) > 1:
        named = ", ".join(f"{c.label}: {k}" for k, c in lists.items())
        raise ConfigError(
            f"trainer.devices: the models name different GPU lists ({named}); with --jobs every "
            "model must name the same list, or run them in separate sweeps"
        )
    if lists:
        indices: list[int] = next(iter(lists.values())).trainer.devices  # type: ignore[assignment]
        if seen is None:
            return [str(i) for i in indices]
        if max(indices) >= len(seen):
            shows = f"{len(seen)} GPU(s), indices 0 to {len(seen) - 1}" if seen else "no GPU"
            raise ConfigError(
                f"trainer.devices {indices}: CUDA_VISIBLE_DEVICES={visible} shows {shows}; "
                "name those, or unset CUDA_VISIBLE_DEVICES"
            )
        return [seen[i] for i in indices]
    if seen is not None:
        return seen
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:
        return []


def _die_with_parent() -> None:
    """In the child: get SIGKILL when the sweep process dies (Linux), so no orphan writes on."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


@dataclass
class _Worker:
    slot: int
    proc: subprocess.Popen
    tasks: IO[str]  # our end of the worker's task pipe
    results: IO[str]  # our end of its result pipe
    gpu: str | None
    cell: Cell | None = None  # the cell it holds now
    number: int = 0


def _exit_text(returncode: int, began: bool = True) -> str:
    """Why a worker's cell failed; ``began``: it had written the cell's "running" record."""
    when = "while running the cell" if began else "before the cell began"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (out of memory?)" if -returncode == signal.SIGKILL else ""
        return f"worker process killed by {name}{hint} {when}"
    return f"worker process exited with code {returncode} {when}"


class ProcessBackend:
    name = "process"

    def __init__(self, jobs: int):
        self.jobs = max(1, jobs)

    def run(self, cells: Sequence[Cell], root: Path, exp_dir: Path, report: Report) -> None:
        if not cells:
            return
        pool = _Pool(list(cells), Path(root), Path(exp_dir), report, self.jobs, gpus(cells))
        with Interrupts(pool.interrupt, pool.kill):
            try:
                pool.run()
            finally:
                pool.close()
        if pool.abort:
            raise from_wire(pool.abort)
        if pool.user:
            raise KeyboardInterrupt


class _Pool:
    """The workers of one sweep and the cells still to hand out."""

    def __init__(self, cells: list[Cell], root: Path, exp_dir: Path, report: Report, jobs: int, gpus: list[str]):
        self.cells, self.root, self.exp_dir, self.report = cells, root, exp_dir, report
        self.jobs, self.gpus = jobs, gpus
        self.threads = max(1, (os.cpu_count() or 1) // jobs)
        self.queue = deque(cells)
        self.workers: dict[int, _Worker] = {}
        self.selector = selectors.DefaultSelector()
        self.started = 0
        self.stop = False  # start no new cell
        self.user = False  # the user pressed Ctrl-C
        self.abort: WireError | None = None

    def run(self) -> None:
        for slot in range(min(self.jobs, len(self.cells))):
            self.spawn(slot)
        for worker in list(self.workers.values()):
            self.give(worker)
        while any(w.cell is not None for w in self.workers.values()):
            for key, _ in self.selector.select(timeout=1.0):
                self.receive(key.data)

    def spawn(self, slot: int) -> _Worker:
        gpu = self.gpus[slot % len(self.gpus)] if self.gpus else None
        task_r, task_w = os.pipe()
        result_r, result_w = os.pipe()
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads), "TQDM_DISABLE": "1"}
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        try:
            # Own session: a terminal Ctrl-C reaches the sweep, which forwards exactly one.
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "adrun.backends.worker",
                    str(task_r),
                    str(result_w),
                    str(self.threads),
                    "1" if gpu is not None else "0",
                ],
                env=env,
                pass_fds=(task_r, result_w),
                start_new_session=True,
                preexec_fn=_die_with_parent,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        except BaseException:
            os.close(task_w)
            os.close(result_r)
            raise
        finally:
            os.close(task_r)
            os.close(result_w)
        worker = _Worker(
            slot, proc, os.fdopen(task_w, "w", encoding="utf-8"), os.fdopen(result_r, "r", encoding="utf-8"), gpu
        )
        self.workers[slot] = worker
        self.selector.register(worker.results, selectors.EVENT_READ, worker)
        return worker

    def give(self, worker: _Worker) -> None:
        """Hand the next cell to an idle worker, or let the worker go when there is none."""
        if not self.queue or self.stop:
            with contextlib.suppress(OSError):
                worker.tasks.close()  # EOF: the worker exits
            return
        cell = self.queue.popleft()
        self.started += 1
        worker.cell, worker.number = cell, self.started
        task = {"cell": cell.model_dump(mode="json"), "root": str(self.root), "exp_dir": str(self.exp_dir)}
        with contextlib.suppress(BrokenPipeError):  # it died: the EOF on its result pipe says so
            worker.tasks.write(json.dumps(task) + "\n")
            worker.tasks.flush()
        self.report(Event("started", cell, worker.number, len(self.cells)))

    def receive(self, worker: _Worker) -> None:
        """A worker's result line, or the end of its result pipe: it died."""
        line = worker.results.readline()
        if line:
            message = json.loads(line)
            result = Result(message["record"], message.get("abort"))
        else:
            self.selector.unregister(worker.results)
            worker.results.close()
            del self.workers[worker.slot]
            returncode = worker.proc.wait()
            if worker.cell is None:
                return  # it was idle: nothing lost
            result = Result(self.lost(worker, returncode))
        cell, number = worker.cell, worker.number
        assert cell is not None
        worker.cell = None
        if worker.slot not in self.workers and self.queue and not self.stop:
            worker = self.spawn(worker.slot)  # a fresh worker for the rest, on the dead one's GPU
        if result.abort and self.abort is None:
            self.abort, self.stop = result.abort, True
        if self.report(Event("finished", cell, number, len(self.cells), record=result.record)):
            self.stop = True
        if worker.slot in self.workers:
            self.give(worker)

    def lost(self, worker: _Worker, returncode: int) -> Record:
        """The record of the cell a dead worker held: the one it left if whole and final, else a
        failed one (``interrupted`` after a Ctrl-C: the forwarded SIGINT ended it outside the cell)."""
        assert worker.cell is not None
        cell = worker.cell
        folder = folder_of(cell, self.exp_dir)
        try:
            left = json.loads((folder / RECORD).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            left = {}
        if left.get("key") != cell.key or left.get("pid") != worker.proc.pid:
            left = {}  # from an earlier sweep: this worker never began the cell
        if left.get("status") not in (None, "running"):
            return left  # it finished the cell, then died before saying so
        error, status = (
            ("interrupted by the user", "interrupted")
            if self.user
            else (_exit_text(returncode, began=bool(left)), "failed")
        )
        record = dead_record(
            cell,
            self.root,
            error,
            status=status,
            started_at=left.get("started_at"),
            pid=worker.proc.pid,
            cuda_visible_devices=worker.gpu,
        )
        write_record(folder, record)
        return record

    def interrupt(self) -> None:
        """First Ctrl-C: no new cell; each busy worker gets one SIGINT and records its cell interrupted."""
        self.stop = self.user = True
        for worker in list(self.workers.values()):
            if worker.cell is not None:
                with contextlib.suppress(OSError):
                    worker.proc.send_signal(signal.SIGINT)

    def kill(self) -> None:
        """Second Ctrl-C: the sweep exits at once, its workers with it."""
        for worker in list(self.workers.values()):
            with contextlib.suppress(OSError):
                worker.proc.kill()

    def close(self) -> None:
        for worker in self.workers.values():
            with contextlib.suppress(OSError):
                worker.tasks.close()
            if worker.cell is not None:  # only when the sweep itself failed: do not wait for the fit
                with contextlib.suppress(OSError):
                    worker.proc.kill()
        for worker in self.workers.values():
            try:
                worker.proc.wait(timeout=EXIT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()
            with contextlib.suppress(OSError):
                worker.results.close()
        self.selector.close()
