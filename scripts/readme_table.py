"""Refresh the generated parts of README.md from real output (run after `make demo`).

- between <!-- demo-table:start --> and <!-- demo-table:end -->: results/demo/pixel_auroc.md
  and the versions from the cells' records;
- between <!-- help:start --> and <!-- help:end -->: `adrun --help`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def splice(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
    if not pattern.search(text):
        sys.exit(f"README.md has no <!-- {name}:start --> ... <!-- {name}:end --> block")
    return pattern.sub(lambda m: m.group(1) + body + m.group(2), text)


def main() -> None:
    demo = REPO / "results" / "demo"
    table = (demo / "pixel_auroc.md").read_text()
    records = [json.loads(p.read_text()) for p in sorted(demo.glob("runs/**/record.json"))]
    versions = records[0]["versions"] if records else {}
    # No timing here: the README quotes one figure, the wall time the sweep itself prints.
    note = (
        f"\n{len(records)} cells (anomalib {versions.get('anomalib', '?')}, torch {versions.get('torch', '?')}).\n"
    )
    help_text = subprocess.run(
        [sys.executable, "-m", "adrun.cli", "--help"], capture_output=True, text=True, check=True,
        # PYTHONPATH passes through, so a checkout run with another venv documents its own code.
        env={"COLUMNS": "100", "PATH": "", **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"}},
    ).stdout
    readme = REPO / "README.md"
    text = readme.read_text()
    text = splice(text, "demo-table", table + note)
    text = splice(text, "help", "```\n" + help_text.rstrip() + "\n```\n")
    readme.write_text(text)
    print(f"README.md refreshed from {demo}")


if __name__ == "__main__":
    main()
