"""scripts/_venv.sh (sourced by test.sh and demo.sh) refuses to build an environment anywhere but
the repository root."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_venv_script_refuses_a_folder_other_than_the_root(tmp_path):
    done = subprocess.run(
        ["bash", "-c", f"source {ROOT / 'scripts' / '_venv.sh'} test; echo still-here"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "run from the repository root" in done.stderr and str(tmp_path) in done.stderr
    assert "still-here" not in done.stdout
    assert not (tmp_path / ".venv").exists()  # nothing was created or installed there
