"""A full disk for the backend tests, in every process that has this folder on PYTHONPATH.

Python imports ``sitecustomize`` at start-up, so the sweep's worker processes and the Ray
nodes' workers load this too. It wraps ``os.replace``: renaming a finished ``model.ckpt``
into place fails with ENOSPC when a folder above it holds ``MARKER``, as if the disk had
filled while the checkpoint was written. Without the marker nothing changes.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

MARKER = ".adrun-test-disk-full"
_real_replace = os.replace


def full_disk_replace(src, dst, *args, **kwargs):
    target = Path(os.fsdecode(dst))
    if target.name == "model.ckpt" and any((folder / MARKER).exists() for folder in target.parents):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return _real_replace(src, dst, *args, **kwargs)


if __name__ == "sitecustomize":
    os.replace = full_disk_replace
