"""A full disk and a held checkpoint for the backend tests, in every process that has this
folder on PYTHONPATH.

Python imports ``sitecustomize`` at start-up, so the sweep's worker processes and the Ray
nodes' workers load this too. It wraps ``os.replace``, which puts a finished ``model.ckpt``
into place once a cell's fit is done:

- a folder above it holds ``MARKER``: the rename fails with ENOSPC, as if the disk had
  filled while the checkpoint was written;
- a folder above it holds ``HOLD``: the process writes ``held-<pid>`` next to ``HOLD`` and
  waits until ``HOLD`` is gone. A cell that waits there is running and cannot finish, so a
  test can interrupt it without racing it to the end.

Without either file nothing changes.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

MARKER = ".adrun-test-disk-full"
HOLD = ".adrun-test-hold"
_real_replace = os.replace


def _above(target: Path, name: str) -> Path | None:
    return next((folder for folder in target.parents if (folder / name).exists()), None)


def hooked_replace(src, dst, *args, **kwargs):
    target = Path(os.fsdecode(dst))
    if target.name == "model.ckpt":
        if held := _above(target, HOLD):
            (held / f"held-{os.getpid()}").write_text("")
            while (held / HOLD).exists():
                time.sleep(0.05)
        if _above(target, MARKER):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return _real_replace(src, dst, *args, **kwargs)


if __name__ == "sitecustomize":
    os.replace = hooked_replace
