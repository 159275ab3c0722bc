"""`make test` never skips for a package `make venv` could have installed (issue 23): such a skip fails."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_skip_for_a_missing_package_fails_and_other_skips_stay_skips(tmp_path):
    f = tmp_path / "test_probe.py"
    f.write_text(
        "import pytest\n"
        "def test_missing():\n    pytest.importorskip('no_such_package_xyz')\n"
        "def test_reasoned():\n    pytest.importorskip('no_such_package_xyz', reason='xyz is not installed')\n"
        "def test_hardware():\n    pytest.skip('needs two CUDA devices')\n",
        encoding="utf-8",
    )
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider", str(f)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1, r.stdout[-2000:]
    assert "2 failed, 1 skipped" in r.stdout, r.stdout[-2000:]
    assert "missing package that `make venv` installs" in r.stdout
