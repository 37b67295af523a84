"""A worker process of ``adrun sweep --jobs N`` (``adrun.backends.process``): many cells, one process.

``python -m adrun.backends.worker TASK_FD RESULT_FD THREADS PINNED`` reads one JSON task per line
(a cell, the dataset root, the experiment folder) from TASK_FD, runs the cell, and writes
one JSON line back to RESULT_FD: the cell's final record and, when the error must stop the
sweep (a full disk), that error by class and message. It exits at the end of TASK_FD, or
with 130 after a Ctrl-C the sweep forwarded. The record files it writes itself. The parent
sets ``OMP_NUM_THREADS`` and ``CUDA_VISIBLE_DEVICES`` (PINNED=1: one GPU for this process).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path


def main(task_fd: int, result_fd: int, threads: int, pinned_gpu: bool) -> int:
    import torch

    # N jobs on C cores: each gets C // N threads so they do not oversubscribe.
    torch.set_num_threads(threads)
    from adrun.backends.base import run_one
    from adrun.config import Cell

    with os.fdopen(task_fd, "r", encoding="utf-8") as tasks, os.fdopen(result_fd, "w", encoding="utf-8") as out:
        try:
            for line in tasks:
                task = json.loads(line)
                signal.signal(signal.SIGINT, signal.default_int_handler)  # Lightning may have left it ignored
                cell = Cell.model_validate(task["cell"])
                result = run_one(cell, Path(task["root"]), Path(task["exp_dir"]), pinned_gpu=pinned_gpu)
                out.write(json.dumps({"record": result.record, "abort": result.abort}) + "\n")
                out.flush()
                if result.stopped:
                    return 130
        except KeyboardInterrupt:
            return 130
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    sys.exit(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"))
