"""The README's generated parts match what the code prints."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_readme_help_block_matches_adrun_help():
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "readme_table.py"), "--check-help"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "matches `adrun --help`" in done.stdout


def test_check_help_fails_on_a_stale_block(tmp_path, monkeypatch):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import readme_table
    finally:
        sys.path.remove(str(REPO / "scripts"))
    stale = tmp_path / "README.md"
    stale.write_text((REPO / "README.md").read_text().replace("Run every model x category cell", "Run some cells"))
    assert readme_table.check_help(stale) == 1
