"""Refresh the generated parts of README.md from real output (run after `make demo`).

- between <!-- demo-table:start --> and <!-- demo-table:end -->: results/demo/pixel_auroc.md
  (without its title line) and the versions from the cells' records;
- between <!-- seeds-table:start --> and <!-- seeds-table:end -->: the same from
  results/seeds (after `adrun sweep configs/seeds.yaml`), with the cells' own timings,
  when that folder exists;
- between <!-- help:start --> and <!-- help:end -->: `adrun --help`.

`--check-help` changes nothing: it exits 1 when the README's help block differs from
`adrun --help` (CI runs it through tests/test_readme.py).
"""

from __future__ import annotations

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


def help_block() -> str:
    help_text = subprocess.run(
        [sys.executable, "-m", "adrun.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
        # A fixed width; PYTHONPATH kept, so a source tree on it is the adrun that answers.
        env={"COLUMNS": "100", "PATH": "", **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"}},
    ).stdout
    return "```\n" + help_text.rstrip() + "\n```\n"


def check_help(readme: Path) -> int:
    text = readme.read_text()
    if splice(text, "help", help_block()) != text:
        print(f"{readme}: the help block differs from `adrun --help`; run `make readme` to refresh it")
        return 1
    print(f"{readme}: the help block matches `adrun --help`")
    return 0


def table_block(exp: Path, timing: bool = True) -> str:
    """The experiment's pixel-AUROC table without its title line, and (with timing) the cells' fit + test time."""
    from adrun.tables import select

    lines = (exp / "pixel_auroc.md").read_text().splitlines()
    while lines and (lines[0].startswith("# ") or not lines[0].strip()):
        lines.pop(0)  # the title names the experiment; the README's text around the block does
    records = [r for r in select(exp).records if r["status"] == "success"]
    seconds = sum(r["seconds"].get("total", 0.0) for r in records)
    versions = records[0]["versions"] if records else {}
    versions_text = f"(anomalib {versions.get('anomalib', '?')}, torch {versions.get('torch', '?')})"
    if timing:
        note = (
            f"\n{len(records)} cells, {seconds:.0f} s of fit + test in total on this project's 2-core CPU "
            f"machine {versions_text}.\n"
        )
    else:
        # No timing for the demo: the README quotes one figure, the wall time the sweep itself prints.
        note = f"\n{len(records)} cells {versions_text}.\n"
    return "\n".join(lines) + "\n" + note


def main() -> None:
    if sys.argv[1:] == ["--check-help"]:
        sys.exit(check_help(REPO / "README.md"))
    demo = REPO / "results" / "demo"
    readme = REPO / "README.md"
    text = readme.read_text()
    text = splice(text, "demo-table", table_block(demo, timing=False))
    seeds = REPO / "results" / "seeds"
    if (seeds / "pixel_auroc.md").is_file():
        text = splice(text, "seeds-table", table_block(seeds, timing=True))
    text = splice(text, "help", help_block())
    readme.write_text(text)
    print(f"README.md refreshed from {demo}" + (f" and {seeds}" if (seeds / "pixel_auroc.md").is_file() else ""))


if __name__ == "__main__":
    main()
