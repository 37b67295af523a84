"""One cell in its own process, for ``adrun sweep --jobs N``.

``python -m adrun.worker SPEC.json`` runs the cell described in SPEC and exits
0 (success), 1 (failed) or 130 (interrupted); the record on disk says the rest.
The parent sets the thread count and ``CUDA_VISIBLE_DEVICES`` in the environment.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    import torch

    # N jobs on C cores: each gets C // N threads so they do not oversubscribe.
    torch.set_num_threads(int(spec["threads"]))
    from adrun.config import Cell
    from adrun.run import run_cell

    cell = Cell.model_validate(spec["cell"])
    try:
        run_cell(cell, Path(spec["root"]), Path(spec["exp_dir"]))
    except KeyboardInterrupt:
        return 130
    except Exception:
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    sys.exit(main(sys.argv[1]))
